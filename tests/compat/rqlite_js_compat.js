// Compatibility check: the real rqlite-js client (DataApiClient, StatusApiClient)
// against a running cairnd.
//
//   node tests/compat/rqlite_js_compat.js http://127.0.0.1:4001
//
// Prints one line per check; exits 0 when every check passed, 1 on any mismatch or
// client error, 2 on bad usage. The database must not yet have a table named compat_foo.
'use strict'

const assert = require('assert')
const { DataApiClient, StatusApiClient } = require('rqlite-js')

const url = process.argv[2]
if (!url || !/^https?:\/\//.test(url)) {
  console.error('usage: node rqlite_js_compat.js http://HOST:PORT')
  process.exit(2)
}

// No retries: a failed request must surface, not be re-sent (a re-sent INSERT
// would hide or cause duplicates).
const clientOptions = { retryableHttpMethods: new Set() }
const data = new DataApiClient(url, clientOptions)
const status = new StatusApiClient(url, clientOptions)

let failures = 0
let passed = 0

function check (what, fn) {
  try {
    fn()
    passed += 1
    console.log('ok   ' + what)
  } catch (e) {
    failures += 1
    console.log('FAIL ' + what + ': ' + (e && e.message ? e.message : String(e)))
  }
}

function noError (what, results) {
  check(what + ': no error', () => {
    if (results.hasError()) {
      throw new Error('server reported: ' + results.getFirstError().message)
    }
  })
}

async function main () {
  let r

  // CREATE TABLE
  r = await data.execute(
    'CREATE TABLE compat_foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER, score REAL, pic BLOB)')
  noError('create table', r)

  // INSERT with positional parameters
  r = await data.execute([['INSERT INTO compat_foo(name, age, score) VALUES(?, ?, ?)', 'fiona', 20, 1.5]])
  noError('insert positional', r)
  check('insert positional: last_insert_id 1', () => assert.strictEqual(r.get(0).getLastInsertId(), 1))
  check('insert positional: rows_affected 1', () => assert.strictEqual(r.get(0).getRowsAffected(), 1))

  // INSERT with named parameters
  r = await data.execute([['INSERT INTO compat_foo(name, age, score) VALUES(:name, :age, :score)',
    { name: 'declan', age: 25, score: 2.25 }]])
  noError('insert named', r)
  check('insert named: last_insert_id 2', () => assert.strictEqual(r.get(0).getLastInsertId(), 2))

  // Several statements in a transaction
  r = await data.execute([
    ['INSERT INTO compat_foo(name, age, score) VALUES(?, ?, ?)', 'sinead', 30, -0.5],
    ['INSERT INTO compat_foo(name, age, score) VALUES(?, ?, ?)', 'Zoë 😀 "quoted" \\ \n日本', 41, 1e-3],
    "INSERT INTO compat_foo(name, pic) VALUES('blob', X'00FF')",
  ], { transaction: true })
  noError('transaction', r)
  check('transaction: three results', () => assert.strictEqual(r.getResults().length, 3))
  check('transaction: ids 3, 4, 5', () => assert.deepStrictEqual(
    r.getResults().map((x) => x.getLastInsertId()), [3, 4, 5]))

  // A failing transaction changes nothing
  r = await data.execute([
    "INSERT INTO compat_foo(name) VALUES('ghost')",
    "INSERT INTO compat_missing_table(name) VALUES('x')",
  ], { transaction: true })
  check('failed transaction: error reported', () => assert.ok(r.hasError()))
  check('failed transaction: error names the table', () =>
    assert.match(r.getFirstError().message, /no such table/))
  r = await data.query("SELECT count(*) AS n FROM compat_foo WHERE name = 'ghost'")
  noError('count after failed transaction', r)
  check('failed transaction: rolled back', () => assert.strictEqual(r.get(0).get('n'), 0))

  // SQL error without a transaction
  r = await data.execute('SELEC nonsense')
  check('syntax error: reported as result error', () => assert.ok(r.hasError()))
  check('syntax error: message', () => assert.match(r.getFirstError().message, /syntax error/))

  // Query (HTTP GET) and values
  r = await data.query('SELECT id, name, age, score, pic FROM compat_foo ORDER BY id')
  noError('select all', r)
  check('select all: rows as objects', () => assert.deepStrictEqual(r.toArray(), [
    { id: 1, name: 'fiona', age: 20, score: 1.5, pic: null },
    { id: 2, name: 'declan', age: 25, score: 2.25, pic: null },
    { id: 3, name: 'sinead', age: 30, score: -0.5, pic: null },
    { id: 4, name: 'Zoë 😀 "quoted" \\ \n日本', age: 41, score: 1e-3, pic: null },
    { id: 5, name: 'blob', age: null, score: null, pic: 'AP8=' },
  ]))
  check('select all: get(1).get("name")', () => assert.strictEqual(r.get(1).get('name'), 'declan'))

  // Query with parameters (HTTP POST to /db/query)
  r = await data.query([['SELECT name FROM compat_foo WHERE age > ? ORDER BY age', 21]])
  noError('select with parameter', r)
  check('select with parameter: names', () => assert.deepStrictEqual(
    r.toArray(), [{ name: 'declan' }, { name: 'sinead' }, { name: 'Zoë 😀 "quoted" \\ \n日本' }]))

  r = await data.query([['SELECT id FROM compat_foo WHERE name = :n', { n: 'fiona' }]])
  noError('select with named parameter', r)
  check('select with named parameter', () => assert.deepStrictEqual(r.toArray(), [{ id: 1 }]))

  // Every read consistency level the client knows
  for (const level of ['none', 'weak', 'linearizable', 'strong']) {
    r = await data.query('SELECT count(*) AS n FROM compat_foo', { level })
    noError('level ' + level, r)
    check('level ' + level + ': count 5', () => assert.strictEqual(r.get(0).get('n'), 5))
  }

  // An empty result: one DataResult without data (rqlite omits "values")
  r = await data.query('SELECT * FROM compat_foo WHERE id = -1')
  noError('empty select', r)
  check('empty select: one empty result', () => {
    assert.strictEqual(r.getResults().length, 1)
    assert.deepStrictEqual(r.get(0).toObject(), {})
  })

  // UPDATE and DELETE counts
  r = await data.execute('UPDATE compat_foo SET age = age + 1 WHERE age >= 25')
  noError('update', r)
  check('update: rows_affected 3', () => assert.strictEqual(r.get(0).getRowsAffected(), 3))
  r = await data.execute([['DELETE FROM compat_foo WHERE name = ?', 'blob']])
  noError('delete', r)
  check('delete: rows_affected 1', () => assert.strictEqual(r.get(0).getRowsAffected(), 1))

  // Large integers within JavaScript's safe range, and timings/pretty flags
  r = await data.execute([['INSERT INTO compat_foo(id, name) VALUES(?, ?)', Number.MAX_SAFE_INTEGER, 'big']])
  noError('insert max safe integer id', r)
  check('insert max safe integer id: last_insert_id', () =>
    assert.strictEqual(r.get(0).getLastInsertId(), Number.MAX_SAFE_INTEGER))
  r = await data.query('SELECT id FROM compat_foo WHERE name = \'big\'', { pretty: true })
  noError('select with pretty', r)
  check('select big id', () => assert.strictEqual(r.get(0).get('id'), Number.MAX_SAFE_INTEGER))
  const timed = await data.query('SELECT count(*) FROM compat_foo', { timings: true, raw: true })
  check('timings: times are numbers', () => {
    assert.strictEqual(typeof timed.body.time, 'number')
    assert.strictEqual(typeof timed.body.results[0].time, 'number')
  })

  // Raw responses
  const raw = await data.query('SELECT 1 AS one, \'x\' AS two', { raw: true })
  check('raw query: HTTP 200', () => assert.strictEqual(raw.status, 200))
  check('raw query: body shape', () => {
    const res = raw.body.results[0]
    assert.deepStrictEqual(res.columns, ['one', 'two'])
    assert.deepStrictEqual(res.types, ['integer', 'text'])
    assert.deepStrictEqual(res.values, [[1, 'x']])
  })

  // Status client
  const st = await status.status()
  check('status: HTTP 200', () => assert.strictEqual(st.status, 200))
  check('status: JSON object', () => assert.ok(st.body && typeof st.body === 'object' && !Array.isArray(st.body)))
}

main().then(() => {
  console.log(`${passed} passed, ${failures} failed`)
  process.exit(failures === 0 ? 0 : 1)
}, (e) => {
  const resp = e && e.response
  console.log('FAIL client error: ' + (e && e.stack ? e.stack : String(e)))
  if (resp) {
    console.log('HTTP ' + resp.status + ' ' + JSON.stringify(resp.data))
  }
  console.log(`${passed} passed, ${failures + 1} failed`)
  process.exit(1)
})
