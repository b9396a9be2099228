/* sixmm.protocol._recfast: the recording writer's hot path in C (optional extension).
 *
 * recv_lines(items, conn, base_ms, mono0, words, secrets) -> bytes | None
 *   items: the recorder's (kind, conn, payload, mono) tuples of one connection
 *
 * Formats one JSON line per received frame exactly as sixmm/recording.py's pure path does:
 *   {"t":<int(base_ms + m*1000)>,"us":<int((m-mono0)*1e6)>,"conn":<conn>,"ev":"recv","text":"<esc>"}\n
 * where <esc> is json.encoder.encode_basestring's escaping of the UTF-8 text (", \, and the
 * control characters; other characters kept as they are). Returns None when any frame is not
 * valid UTF-8, or may hold a credential (contains one of `words`, ASCII case-insensitively,
 * or one of `secrets`): the caller then takes the general per-frame path, which scrubs.
 *
 * The scan and the formatting run without the GIL (the payloads are immutable bytes kept
 * alive by the caller's list), so the connection reader threads keep running meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
    double m;
} frame_t;

static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            unsigned char c1 = s[i + 1], c2 = s[i + 2];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0;           /* overlong */
            if (c == 0xED && c1 > 0x9F) return 0;           /* surrogates */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            unsigned char c1 = s[i + 1], c2 = s[i + 2], c3 = s[i + 3];
            if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0;           /* overlong */
            if (c == 0xF4 && c1 > 0x8F) return 0;           /* > U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int has_bytes(const unsigned char *s, Py_ssize_t n, const unsigned char *w, Py_ssize_t k) {
    if (k == 0 || k > n) return k == 0;
    for (Py_ssize_t i = 0; i + k <= n; i++) {
        if (s[i] == w[0] && memcmp(s + i, w, (size_t)k) == 0) return 1;
    }
    return 0;
}

static const char HEX[] = "0123456789abcdef";

static PyObject *recv_lines(PyObject *self, PyObject *args) {
    PyObject *items, *words, *secrets;
    const char *conn;
    Py_ssize_t conn_len;
    double base_ms, mono0;
    if (!PyArg_ParseTuple(args, "O!y#ddO!O!", &PyList_Type, &items, &conn, &conn_len, &base_ms,
                          &mono0, &PyTuple_Type, &words, &PyTuple_Type, &secrets))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    Py_ssize_t nw = PyTuple_GET_SIZE(words), ns = PyTuple_GET_SIZE(secrets);
    const unsigned char *wp[16], *sp[256];
    Py_ssize_t wl[16], sl[256];
    if (nw > 16 || ns > 256) {
        PyErr_SetString(PyExc_ValueError, "too many words or secrets");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *w = PyTuple_GET_ITEM(words, i);
        if (!PyBytes_Check(w)) { PyErr_SetString(PyExc_TypeError, "words must be bytes"); return NULL; }
        wp[i] = (const unsigned char *)PyBytes_AS_STRING(w);
        wl[i] = PyBytes_GET_SIZE(w);
    }
    for (Py_ssize_t i = 0; i < ns; i++) {
        PyObject *w = PyTuple_GET_ITEM(secrets, i);
        if (!PyBytes_Check(w)) { PyErr_SetString(PyExc_TypeError, "secrets must be bytes"); return NULL; }
        sp[i] = (const unsigned char *)PyBytes_AS_STRING(w);
        sl[i] = PyBytes_GET_SIZE(w);
    }
    unsigned char first[256];
    memset(first, 0, sizeof first);
    for (Py_ssize_t i = 0; i < nw; i++) {
        if (wl[i] == 0) {
            PyErr_SetString(PyExc_ValueError, "empty word");
            return NULL;
        }
        first[wp[i][0]] = 1;
    }
    frame_t *frames = PyMem_Malloc(sizeof(frame_t) * (size_t)(n > 0 ? n : 1));
    if (frames == NULL) return PyErr_NoMemory();
    size_t bound = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 4) {
            PyMem_Free(frames);
            PyErr_SetString(PyExc_TypeError, "items must be (kind, conn, payload, mono) tuples");
            return NULL;
        }
        PyObject *p = PyTuple_GET_ITEM(item, 2);
        PyObject *m = PyTuple_GET_ITEM(item, 3);
        if (!PyBytes_Check(p) || !PyFloat_Check(m)) {
            PyMem_Free(frames);
            PyErr_SetString(PyExc_TypeError, "payloads must be bytes and monos floats");
            return NULL;
        }
        frames[i].p = (const unsigned char *)PyBytes_AS_STRING(p);
        frames[i].n = PyBytes_GET_SIZE(p);
        frames[i].m = PyFloat_AS_DOUBLE(m);
        bound += (size_t)frames[i].n * 6 + (size_t)conn_len + 96;
    }
    char *out = PyMem_RawMalloc(bound);
    if (out == NULL) { PyMem_Free(frames); return PyErr_NoMemory(); }
    int fallback = 0;
    size_t pos = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !fallback; i++) {
        const unsigned char *s = frames[i].p;
        Py_ssize_t len = frames[i].n;
        if (!utf8_valid(s, len)) { fallback = 1; break; }
        /* one pass: only positions whose (lowercased) byte starts some word are compared */
        for (Py_ssize_t j = 0; j < len && !fallback; j++) {
            unsigned char c = lower(s[j]);
            if (!first[c]) continue;
            for (Py_ssize_t w = 0; w < nw; w++) {
                if (wp[w][0] != c || j + wl[w] > len) continue;
                Py_ssize_t k = 1;
                while (k < wl[w] && lower(s[j + k]) == wp[w][k]) k++;
                if (k == wl[w]) { fallback = 1; break; }
            }
        }
        for (Py_ssize_t w = 0; w < ns && !fallback; w++)
            if (has_bytes(s, len, sp[w], sl[w])) fallback = 1;
        if (fallback) break;
        double m = frames[i].m;
        long long t = (long long)(base_ms + m * 1000.0);
        long long us = (long long)((m - mono0) * 1e6);
        pos += (size_t)sprintf(out + pos, "{\"t\":%lld,\"us\":%lld,\"conn\":", t, us);
        memcpy(out + pos, conn, (size_t)conn_len);
        pos += (size_t)conn_len;
        memcpy(out + pos, ",\"ev\":\"recv\",\"text\":\"", 21);
        pos += 21;
        for (Py_ssize_t j = 0; j < len; j++) {
            unsigned char c = s[j];
            if (c >= 0x20 && c != '"' && c != '\\') { out[pos++] = (char)c; continue; }
            out[pos++] = '\\';
            switch (c) {
            case '"': out[pos++] = '"'; break;
            case '\\': out[pos++] = '\\'; break;
            case '\n': out[pos++] = 'n'; break;
            case '\r': out[pos++] = 'r'; break;
            case '\t': out[pos++] = 't'; break;
            case '\b': out[pos++] = 'b'; break;
            case '\f': out[pos++] = 'f'; break;
            default:
                out[pos++] = 'u'; out[pos++] = '0'; out[pos++] = '0';
                out[pos++] = HEX[c >> 4]; out[pos++] = HEX[c & 15];
            }
        }
        memcpy(out + pos, "\"}\n", 3);
        pos += 3;
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(frames);
    if (fallback) {
        PyMem_RawFree(out);
        Py_RETURN_NONE;
    }
    PyObject *result = PyBytes_FromStringAndSize(out, (Py_ssize_t)pos);
    PyMem_RawFree(out);
    return result;
}


/* parse_recv(line: bytes) -> (t, us, conn: str, payload: bytes) | None
 * The inverse of recv_lines for one line in the writer's field order; None for anything else
 * (the caller then parses the line as JSON). */
static int parse_ll(const char *s, Py_ssize_t n, Py_ssize_t *i, long long *out) {
    Py_ssize_t k = *i;
    int neg = 0;
    if (k < n && s[k] == '-') { neg = 1; k++; }
    if (k >= n || s[k] < '0' || s[k] > '9') return 0;
    long long v = 0;
    while (k < n && s[k] >= '0' && s[k] <= '9') {
        if (v > 922337203685477580LL) return 0;
        v = v * 10 + (s[k] - '0');
        k++;
    }
    *out = neg ? -v : v;
    *i = k;
    return 1;
}

static int expect(const char *s, Py_ssize_t n, Py_ssize_t *i, const char *lit) {
    size_t k = strlen(lit);
    if (*i + (Py_ssize_t)k > n || memcmp(s + *i, lit, k) != 0) return 0;
    *i += (Py_ssize_t)k;
    return 1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const char *s, Py_ssize_t n, Py_ssize_t i, unsigned *out) {
    if (i + 4 > n) return 0;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(s[i + k]);
        if (h < 0) return 0;
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 1;
}

static PyObject *parse_recv(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) { PyErr_SetString(PyExc_TypeError, "line must be bytes"); return NULL; }
    const char *s = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg), i = 0;
    long long t, us;
    if (!expect(s, n, &i, "{\"t\":") || !parse_ll(s, n, &i, &t)) Py_RETURN_NONE;
    if (!expect(s, n, &i, ",\"us\":") || !parse_ll(s, n, &i, &us)) Py_RETURN_NONE;
    if (!expect(s, n, &i, ",\"conn\":\"")) Py_RETURN_NONE;
    Py_ssize_t c0 = i;
    while (i < n && s[i] != '"' && s[i] != '\\') i++;
    if (i >= n || s[i] != '"') Py_RETURN_NONE;
    Py_ssize_t c1 = i++;
    if (!expect(s, n, &i, ",\"ev\":\"recv\",\"text\":\"")) Py_RETURN_NONE;
    char *buf = PyMem_Malloc((size_t)(n - i + 1));
    if (buf == NULL) return PyErr_NoMemory();
    Py_ssize_t o = 0;
    int ok = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') { i++; ok = 1; break; }
        if ((unsigned char)c < 0x20) break;
        if (c != '\\') { buf[o++] = c; i++; continue; }
        if (i + 1 >= n) break;
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case '"': buf[o++] = '"'; continue;
        case '\\': buf[o++] = '\\'; continue;
        case '/': buf[o++] = '/'; continue;
        case 'b': buf[o++] = '\b'; continue;
        case 'f': buf[o++] = '\f'; continue;
        case 'n': buf[o++] = '\n'; continue;
        case 'r': buf[o++] = '\r'; continue;
        case 't': buf[o++] = '\t'; continue;
        case 'u': break;
        default: goto fail;
        }
        unsigned cp;
        if (!hex4(s, n, i, &cp)) goto fail;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u' || !hex4(s, n, i + 2, &lo)) goto fail;
            if (lo < 0xDC00 || lo > 0xDFFF) goto fail;
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            goto fail;
        }
        if (cp < 0x80) { buf[o++] = (char)cp; }
        else if (cp < 0x800) { buf[o++] = (char)(0xC0 | (cp >> 6)); buf[o++] = (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            buf[o++] = (char)(0xE0 | (cp >> 12)); buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[o++] = (char)(0x80 | (cp & 0x3F));
        } else {
            buf[o++] = (char)(0xF0 | (cp >> 18)); buf[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F)); buf[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    if (!ok || !expect(s, n, &i, "}")) goto fail;
    if (i < n && s[i] == '\r') i++;
    if (i < n && s[i] == '\n') i++;
    if (i != n) goto fail;
    PyObject *conn = PyUnicode_DecodeUTF8(s + c0, c1 - c0, "strict");
    if (conn == NULL) { PyErr_Clear(); goto fail; }
    PyObject *payload = PyBytes_FromStringAndSize(buf, o);
    PyMem_Free(buf);
    if (payload == NULL) { Py_DECREF(conn); return NULL; }
    return Py_BuildValue("(LLNN)", t, us, conn, payload);
fail:
    PyMem_Free(buf);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"recv_lines", recv_lines, METH_VARARGS,
     "recv_lines(items, conn, base_ms, mono0, words, secrets) -> bytes | None"},
    {"parse_recv", parse_recv, METH_O, "parse_recv(line) -> (t, us, conn, payload) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recfast",
                                    "The recording writer's hot path in C.", -1, methods};

PyMODINIT_FUNC PyInit__recfast(void) { return PyModule_Create(&module); }
