/* The cairn command's HTTP client: libcurl easy interface, one reused handle.
 *
 * Reusing the handle is what gives keep-alive: libcurl keeps the connection in the
 * handle's cache between requests, so a shell session costs one TCP handshake. Redirects
 * are followed with the method kept (a follower may point writes at the leader). See
 * http.h for the contract. Main thread only. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "http.h"

int cliBufAppend(cliBuf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        p = realloc(b->data, cap);
        if (p == NULL) {
            return CLI_ERR_NOMEM;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void cliBufReset(cliBuf *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

void cliBufFree(cliBuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

static size_t onBody(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    cliBuf *b = userdata;
    size_t n = size * nmemb;
    /* Returning less than n makes libcurl fail the transfer with CURLE_WRITE_ERROR. */
    return cliBufAppend(b, ptr, n) == 0 ? n : 0;
}

static int onProgress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                      curl_off_t ulnow)
{
    return cliInterrupted ? 1 : 0;
}

int cliHttpInit(cliHttp *h, const char *url)
{
    CURL *curl;
    const char *rest;
    size_t n;

    memset(h, 0, sizeof *h);
    if (strstr(url, "://") != NULL) {
        n = (size_t)snprintf(h->base, sizeof h->base, "%s", url);
    } else {
        n = (size_t)snprintf(h->base, sizeof h->base, "http://%s", url);
    }
    if (n >= sizeof h->base) {
        snprintf(h->errmsg, sizeof h->errmsg, "host URL is too long");
        return CLI_ERR_USAGE;
    }
    /* Never into the scheme's "//": "", "/" and "http://" name no host. */
    rest = strstr(h->base, "://") + 3;
    while (n > (size_t)(rest - h->base) && h->base[n - 1] == '/') {
        h->base[--n] = '\0';
    }
    if (*rest == '\0' || *rest == '/') {
        snprintf(h->errmsg, sizeof h->errmsg, "invalid host URL '%s': no host", url);
        return CLI_ERR_USAGE;
    }
    snprintf(h->display, sizeof h->display, "%s", rest);

    curl = curl_easy_init();
    if (curl == NULL) {
        snprintf(h->errmsg, sizeof h->errmsg, "cannot initialise libcurl");
        return CLI_ERR_NOMEM;
    }
    h->curl = curl;
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (h->headers != NULL) {
        /* No "Expect: 100-continue" round trip before bodies over 1 KiB: cairnd reads them
         * anyway, and the wait would add latency to every large batch. */
        struct curl_slist *more = curl_slist_append(h->headers, "Expect:");
        if (more == NULL) {
            curl_slist_free_all(h->headers);
        }
        h->headers = more;
    }
    if (h->headers == NULL) {
        snprintf(h->errmsg, sizeof h->errmsg, "out of memory");
        return CLI_ERR_NOMEM;
    }
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(curl, CURLOPT_POSTREDIR, (long)CURL_REDIR_POST_ALL);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "cairn/" CLI_VERSION);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, onBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &h->body);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, onProgress);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    return 0;
}

void cliHttpClose(cliHttp *h)
{
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
        h->curl = NULL;
    }
    if (h->headers != NULL) {
        curl_slist_free_all(h->headers);
        h->headers = NULL;
    }
    cliBufFree(&h->body);
}

/* Runs the transfer prepared on h->curl for base+path. */
static int perform(cliHttp *h, const char *path)
{
    CURL *curl = h->curl;
    char errbuf[CURL_ERROR_SIZE];
    char *url;
    size_t urlLen = strlen(h->base) + strlen(path) + 1;
    CURLcode rc;
    int ret = 0;

    h->status = 0;
    h->seconds = 0;
    h->errmsg[0] = '\0';
    cliBufReset(&h->body);
    url = malloc(urlLen);
    if (url == NULL) {
        snprintf(h->errmsg, sizeof h->errmsg, "out of memory");
        return CLI_ERR_NOMEM;
    }
    snprintf(url, urlLen, "%s%s", h->base, path);
    errbuf[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    rc = curl_easy_perform(curl);
    if (rc == CURLE_ABORTED_BY_CALLBACK && cliInterrupted) {
        snprintf(h->errmsg, sizeof h->errmsg, "interrupted");
        ret = CLI_ERR_INTERRUPT;
        goto cleanup;
    }
    if (rc == CURLE_WRITE_ERROR) {
        /* Only onBody() fails writes, and only when it cannot grow the buffer. */
        snprintf(h->errmsg, sizeof h->errmsg, "out of memory reading the response");
        ret = CLI_ERR_NOMEM;
        goto cleanup;
    }
    if (rc != CURLE_OK) {
        snprintf(h->errmsg, sizeof h->errmsg, "cannot reach cairnd at %s: %s", h->base,
                 errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc));
        ret = CLI_ERR_NET;
        goto cleanup;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &h->status);
    curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &h->seconds);
    if (h->body.data == NULL && cliBufAppend(&h->body, "", 0) != 0) {
        /* Callers may rely on body.data being a string even for an empty response. */
        snprintf(h->errmsg, sizeof h->errmsg, "out of memory");
        ret = CLI_ERR_NOMEM;
    }

cleanup:
    /* errbuf is about to go out of scope: libcurl must not keep a pointer to it. */
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL);
    free(url);
    return ret;
}

int cliHttpGet(cliHttp *h, const char *path)
{
    curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    return perform(h, path);
}

int cliHttpPost(cliHttp *h, const char *path, const char *body, size_t len)
{
    curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)h->headers);
    return perform(h, path);
}
