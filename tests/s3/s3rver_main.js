#!/usr/bin/env node
// s3rver (the npm package pinned by package.json), started for the S3 system tests, with
// what s3rver 3.7.1 lacks of the multipart API added in front of its router, on its own
// filesystem store:
//   - AbortMultipartUpload (DELETE /bucket/key?uploadId=ID), 204; NoSuchUpload when gone;
//   - ListMultipartUploads (GET /bucket?uploads), all pending uploads in one page;
//   - UploadPart and CompleteMultipartUpload on an unknown upload: 404 NoSuchUpload, as
//     S3 answers (s3rver would quietly recreate the upload's directory);
//   - CompleteMultipartUpload checks the parts as S3 does: they exist, their ETags match,
//     in ascending order, every part but the last at least 5 MiB (InvalidPart,
//     InvalidPartOrder, EntityTooSmall);
//   - If-Match on GET and HEAD, and If-None-Match: * on PutObject and
//     CompleteMultipartUpload (412 PreconditionFailed), which s3rver ignores.
// s3rver checks no SigV4 signature (tests/s3/sigproxy.py in front of it does); the test
// access keys are registered so that it accepts them.
//
//   node --openssl-legacy-provider s3rver_main.js --directory DIR [--address 127.0.0.1]
//        [--port 0] [--bucket NAME]... [--key ID:SECRET]...
// Prints "listening PORT" on stdout once it serves.
//
// s3rver makes its ListObjectsV2 continuation tokens with DES, which OpenSSL 3 (Node 17
// and later) only has in its legacy provider: without --openssl-legacy-provider every
// listing of more than one page fails with 500 InternalError, so this refuses to start.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const S3rver = require('s3rver');
const S3Error = require('s3rver/lib/models/error');
const AWSAccount = require('s3rver/lib/models/account');

const MIN_PART = 5 * 1024 * 1024;

function parseArgs(argv) {
  const o = { address: '127.0.0.1', port: 0, buckets: [], keys: [], directory: null };
  for (let i = 0; i < argv.length; i += 2) {
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${argv[i]} needs a value`);
    switch (argv[i]) {
      case '--directory': o.directory = v; break;
      case '--address': o.address = v; break;
      case '--port': o.port = Number(v); break;
      case '--bucket': o.buckets.push(v); break;
      case '--key': o.keys.push(v.split(':')); break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
  }
  if (!o.directory) throw new Error('--directory is required');
  return o;
}

try {
  crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
} catch (e) {
  console.error('s3rver_main.js: DES is not available (' + e.message + '): run node with ' +
    '--openssl-legacy-provider, or s3rver cannot page listings');
  process.exit(1);
}

const opts = parseArgs(process.argv.slice(2));
for (const [id, secret] of opts.keys) {
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(id, secret);
}

const xmlEscape = s => String(s).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
const uploadsDir = bucket => path.join(opts.directory, bucket, '._S3rver_uploads');

function readUpload(bucket, uploadId) {
  if (!/^[0-9a-f]{1,64}$/.test(uploadId)) return null;
  const dir = path.join(uploadsDir(bucket), uploadId);
  try {
    return { dir, key: fs.readFileSync(path.join(dir, 'key'), 'utf8') };
  } catch (e) {
    return null;
  }
}

function noSuchUpload(uploadId) {
  return new S3Error(
    'NoSuchUpload',
    'The specified upload does not exist. The upload ID may be invalid, or the upload ' +
      'may have been aborted or completed.',
    { UploadId: uploadId },
  );
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', d => chunks.push(d));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function decodeXml(s) {
  return s.replace(/&(lt|gt|amp|quot|apos|#x[0-9a-fA-F]+|#[0-9]+);/g, (m, e) => {
    switch (e) {
      case 'lt': return '<';
      case 'gt': return '>';
      case 'amp': return '&';
      case 'quot': return '"';
      case 'apos': return "'";
      default:
        return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    }
  });
}

async function completeUpload(ctx, bucket, key, up) {
  const body = await readBody(ctx.req);
  const parts = [];
  // S3 takes a part's elements in any order (the AWS SDKs send <ETag> first).
  const re = /<Part>([\s\S]*?)<\/Part>/g;
  let m;
  while ((m = re.exec(body)) !== null) {
    const num = /<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(m[1]);
    const etag = /<ETag>([^<]*)<\/ETag>/.exec(m[1]);
    if (num === null || etag === null) {
      throw new S3Error('MalformedXML',
        'The XML you provided was not well-formed or did not validate against our published schema.');
    }
    parts.push({ number: Number(num[1]), etag: decodeXml(etag[1]).replace(/"/g, '') });
  }
  if (!/^\s*(<\?xml[^>]*\?>\s*)?<CompleteMultipartUpload[\s>]/.test(body) || parts.length === 0) {
    throw new S3Error('MalformedXML',
      'The XML you provided was not well-formed or did not validate against our published schema.');
  }
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (i > 0 && p.number <= parts[i - 1].number) {
      throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order.');
    }
    let md5, size;
    try {
      md5 = fs.readFileSync(path.join(up.dir, `${p.number}.md5`), 'utf8').trim();
      size = fs.statSync(path.join(up.dir, String(p.number))).size;
    } catch (e) {
      md5 = null;
    }
    if (md5 === null || md5 !== p.etag) {
      throw new S3Error('InvalidPart',
        'One or more of the specified parts could not be found. The part may not have been ' +
        "uploaded, or the specified entity tag may not match the part's entity tag.",
        { PartNumber: p.number, ETag: p.etag });
    }
    if (i < parts.length - 1 && size < MIN_PART) {
      throw new S3Error('EntityTooSmall',
        'Your proposed upload is smaller than the minimum allowed object size.',
        { PartNumber: p.number, ProposedSize: size, MinSizeAllowed: MIN_PART });
    }
  }
  const { md5 } = await ctx.store.putObjectMultipart(bucket, path.basename(up.dir), parts);
  ctx.status = 200;
  ctx.type = 'application/xml';
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    '<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
    `<Location>${xmlEscape(ctx.href.split('?')[0])}</Location>` +
    `<Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(key)}</Key>` +
    `<ETag>&quot;${md5}-${parts.length}&quot;</ETag></CompleteMultipartUploadResult>`;
}

function listUploads(ctx, bucket) {
  const prefix = ctx.query.prefix || '';
  const encode = ctx.query['encoding-type'] === 'url';
  const enc = s => (encode ? encodeURIComponent(s).replace(/%2F/g, '/') : s);
  let ids = [];
  try {
    ids = fs.readdirSync(uploadsDir(bucket));
  } catch (e) {
    ids = [];
  }
  const ups = [];
  for (const id of ids) {
    const up = readUpload(bucket, id);
    if (up === null || !up.key.startsWith(prefix)) continue;
    const t = fs.statSync(up.dir).mtime.toISOString();
    ups.push({ key: up.key, id, t });
  }
  ups.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.id < b.id ? -1 : 1));
  ctx.status = 200;
  ctx.type = 'application/xml';
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
    `<Bucket>${xmlEscape(bucket)}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>` +
    `<Prefix>${xmlEscape(enc(prefix))}</Prefix>` +
    (encode ? '<EncodingType>url</EncodingType>' : '') +
    '<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>' +
    ups
      .map(u =>
        `<Upload><Key>${xmlEscape(enc(u.key))}</Key><UploadId>${u.id}</UploadId>` +
        '<StorageClass>STANDARD</StorageClass>' +
        `<Initiated>${u.t}</Initiated></Upload>`)
      .join('') +
    '</ListMultipartUploadsResult>';
}

async function s3Extras(ctx, next) {
  const m = /^\/([^/]+)(?:\/(.+))?$/.exec(ctx.path);
  if (m === null) return next();
  let bucket, key;
  try {
    bucket = decodeURIComponent(m[1]);
    key = m[2] === undefined ? '' : decodeURIComponent(m[2]);
  } catch (e) {
    return next();
  }
  if (!fs.existsSync(path.join(opts.directory, bucket))) return next(); // NoSuchBucket
  const q = ctx.query;
  if (ctx.method === 'GET' && key === '' && 'uploads' in q) {
    return listUploads(ctx, bucket);
  }
  const ifMatch = ctx.headers['if-match'];
  if (key !== '' && ifMatch && (ctx.method === 'GET' || ctx.method === 'HEAD') &&
      Object.keys(q).length === 0) {
    let meta = null;
    try {
      meta = await ctx.store.getMetadata(bucket, key);
    } catch (e) {
      meta = null; // no such object: s3rver answers 404
    }
    const strip = s => s.trim().replace(/^"|"$/g, '');
    if (meta !== null && ifMatch.trim() !== '*' && strip(ifMatch) !== strip(meta.etag)) {
      throw new S3Error('PreconditionFailed',
        'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
    }
  }
  if (key !== '' && (ctx.headers['if-none-match'] || '').trim() === '*' &&
      ((ctx.method === 'PUT' && Object.keys(q).length === 0) ||
       (ctx.method === 'POST' && 'uploadId' in q))) {
    let exists = true;
    try {
      await ctx.store.getMetadata(bucket, key);
    } catch (e) {
      exists = false;
    }
    if (exists) {
      throw new S3Error('PreconditionFailed',
        'At least one of the pre-conditions you specified did not hold',
        { Condition: 'If-None-Match' });
    }
  }
  if (key !== '' && 'uploadId' in q) {
    const up = readUpload(bucket, q.uploadId);
    if (up === null || up.key !== key) throw noSuchUpload(q.uploadId);
    if (ctx.method === 'DELETE') {
      fs.rmSync(up.dir, { recursive: true, force: true });
      ctx.status = 204;
      return undefined;
    }
    if (ctx.method === 'POST') {
      return completeUpload(ctx, bucket, key, up);
    }
  }
  return next();
}

const server = new S3rver({
  address: opts.address,
  port: opts.port,
  directory: opts.directory,
  silent: true,
  vhostBuckets: false,
  configureBuckets: opts.buckets.map(name => ({ name, configs: [] })),
});
// Before s3rver's router (the last middleware), after its error and XML handling.
server.middleware.splice(server.middleware.length - 1, 0, s3Extras);

server.run((err, address) => {
  if (err) {
    console.error(`s3rver: ${err.stack || err}`);
    process.exit(1);
  }
  process.stdout.write(`listening ${address.port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
