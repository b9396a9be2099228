/* sixmm.protocol._recfast: the recording writer's hot path in C (optional extension).
 *
 * Lines(base_ms, mono0, words, limit): a buffer of received frames that the connection reader
 * threads fill, one append() per frame (a copy of its bytes after the credential scan), and
 * the writer thread empties with take(), which formats each frame's line -- the escaping is
 * most of a line's cost -- with the GIL released, exactly as sixmm/recording.py's pure path
 * does:
 *   {"t":<int(base_ms + m*1000)>,"us":<int((m-mono0)*1e6)>,"conn":"<conn>","ev":"recv","text":"<esc>"}\n
 * where <esc> is json.encoder.encode_basestring's escaping of the UTF-8 text (", \, and the
 * control characters; other characters kept as they are). It declines (returns False, appends
 * nothing) a frame that is not valid UTF-8 or may hold a credential (contains one of `words`,
 * ASCII case-insensitively, or one of `secrets`): the caller then queues it for the general
 * path, which scrubs. The reader's share is the scan and a copy (about a third of formatting
 * the line there, as this buffer did before); the writer formats on its own core while the
 * reader goes on.
 *
 * parse_recv(line) -> (t, us, conn, payload) | None: the inverse, for replay.
 * feed_recv(data, pos, ...): the replay's loop over a chunk of lines, feeding each frame to its
 * session (the Python loop in sixmm/replay.py does the same for every other line).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__) && !defined(SIXMM_NO_SIMD)
#include <emmintrin.h>
#endif


/* Length of the valid UTF-8 sequence starting with a byte >= 0x80 at s[0], or 0. */
static Py_ssize_t utf8_seq(const unsigned char *s, Py_ssize_t n) {
    unsigned char c = s[0];
    if (c >= 0xC2 && c <= 0xDF) {
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3) return 0;
        unsigned char c1 = s[1], c2 = s[2];
        if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && c1 < 0xA0) return 0;           /* overlong */
        if (c == 0xED && c1 > 0x9F) return 0;           /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4) return 0;
        unsigned char c1 = s[1], c2 = s[2], c3 = s[3];
        if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && c1 < 0x90) return 0;           /* overlong */
        if (c == 0xF4 && c1 > 0x8F) return 0;           /* > U+10FFFF */
        return 4;
    }
    return 0;
}

static unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Does s hold w (memchr finds each candidate first byte)? */
static int has_bytes(const unsigned char *s, Py_ssize_t n, const unsigned char *w, Py_ssize_t k) {
    if (k == 0) return 1;
    const unsigned char *p = s, *end = s + n;
    while (end - p >= k) {
        p = memchr(p, w[0], (size_t)(end - p - k + 1));
        if (p == NULL) return 0;
        if (memcmp(p, w, (size_t)k) == 0) return 1;
        p++;
    }
    return 0;
}

/* Credential words are found with a rolling key over 3-byte windows: the low five bits of
 * each byte, so 'K' and 'k' (and every other ASCII case pair) give the same key. A set bit in
 * the 4 KiB table means "maybe a word starts here"; a hit is confirmed byte by byte. */
#define TRI(a, b, c) ((((unsigned)(a) & 31u) << 10) | (((unsigned)(b) & 31u) << 5) | ((unsigned)(c) & 31u))

typedef struct {
    unsigned char tri[4096];
    const unsigned char *wp[16];
    Py_ssize_t wl[16];
    Py_ssize_t nw;
    /* the distinct first and second letters of the words (0 pads: a folded byte never is 0);
     * four of each at most, or fs == 0 and has_word tests word by word */
    unsigned char first[4], second[4];
    int fs;
    unsigned short by_first[32];  /* the words (bits) by their first letter's low five bits */
} words_t;

/* Does a word start at s[j] (s holds n bytes)? */
static int word_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t j, const words_t *W) {
    for (Py_ssize_t w = 0; w < W->nw; w++) {
        Py_ssize_t k = 0, l = W->wl[w];
        if (j + l > n || lower(s[j]) != W->wp[w][0]) continue;
        while (k < l && lower(s[j + k]) == W->wp[w][k]) k++;
        if (k == l) return 1;
    }
    return 0;
}

/* Writes v in decimal at out; returns the number of bytes. */
static const char DIGIT_PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static size_t put_ll(char *out, long long v) {
    char tmp[24];
    size_t k = sizeof tmp, o = 0, n;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    if (v < 0) out[o++] = '-';
    while (u >= 100) {  /* two digits per division: a time stamp has thirteen */
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        tmp[--k] = DIGIT_PAIRS[d + 1];
        tmp[--k] = DIGIT_PAIRS[d];
    }
    if (u >= 10) {
        tmp[--k] = DIGIT_PAIRS[u * 2 + 1];
        tmp[--k] = DIGIT_PAIRS[u * 2];
    } else {
        tmp[--k] = (char)('0' + u);
    }
    n = sizeof tmp - k;
    memcpy(out + o, tmp + k, n);
    return o + n;
}

static const char HEX[] = "0123456789abcdef";

/* Is s[0:n] valid UTF-8? Sixteen ASCII bytes at a time where SSE2 is there. */
static int valid_utf8(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t j = 0;
    while (j < n) {
#if defined(__SSE2__) && !defined(SIXMM_NO_SIMD)
        if (j + 16 <= n &&
            _mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(s + j))) == 0) {
            j += 16;
            continue;
        }
#endif
        if (s[j] < 0x80) {
            j++;
            continue;
        }
        Py_ssize_t q = utf8_seq(s + j, n - j);
        if (q == 0) return 0;
        j += q;
    }
    return 1;
}

/* A record: the receive time (a double), the two lengths (uint32), conn, payload. */
#define REC_HEAD (sizeof(double) + 2 * sizeof(uint32_t))
/* The most bytes a record's line can take (every byte escaped as \u00XX: six). */
#define LINE_BOUND(clen, len) (((clen) + (len)) * 6 + 96)

/* Byte classes for the escaping copy: 0 kept, 1 escaped as a backslash and itself (" and \),
 * 2 anything else (control characters, and bytes >= 0x80 that start a UTF-8 sequence). */
static unsigned char CLS[256];

static void init_cls(void) {
    for (int c = 0; c < 256; c++) CLS[c] = (c < 0x20 || c >= 0x80) ? 2 : 0;
    CLS['"'] = 1;
    CLS['\\'] = 1;
}

#if defined(__SSE2__) && !defined(SIXMM_NO_SIMD)
#include <emmintrin.h>
#define RECFAST_SSE2 1

static unsigned ctz32(unsigned x) {
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctz(x);
#else
    unsigned n = 0;
    while (!(x & 1u)) { x >>= 1; n++; }
    return n;
#endif
}

/* word_at for a position whose byte, case folded, is some word's first letter (a SIMD
 * candidate): only the words beginning with that letter are compared, from their second. */
static int word_at_cand(const unsigned char *s, Py_ssize_t n, Py_ssize_t j, const words_t *W) {
    unsigned m = W->by_first[s[j] & 31u];
    while (m) {
        unsigned w = ctz32(m);
        m &= m - 1;
        Py_ssize_t k = 1, l = W->wl[w];
        const unsigned char *wp = W->wp[w];
        if (j + l > n) continue;
        while (k < l && lower(s[j + k]) == wp[k]) k++;
        if (k == l) return 1;
    }
    return 0;
}

/* Sixteen positions at a time: a candidate is a position whose byte and the next one match a
 * word's first two letters in either case (| 0x20 folds ASCII case; other bytes it maps onto a
 * letter only give false candidates, which word_at rejects). */
static unsigned pair_mask(const unsigned char *p, const words_t *W, const __m128i *firsts,
                          const __m128i *seconds) {
    const __m128i fold = _mm_set1_epi8(0x20);
    __m128i a = _mm_or_si128(_mm_loadu_si128((const __m128i *)p), fold);
    __m128i b = _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + 1)), fold);
    __m128i m = _mm_setzero_si128();
    for (Py_ssize_t w = 0; w < W->nw; w++)
        m = _mm_or_si128(m, _mm_and_si128(_mm_cmpeq_epi8(a, firsts[w]),
                                          _mm_cmpeq_epi8(b, seconds[w])));
    return (unsigned)_mm_movemask_epi8(m);
}

/* Sixteen positions at a time, fewer operations than pair_mask and all in registers: a
 * candidate's byte is one of the words' first letters and the next byte one of their second
 * letters (any pairing: more false candidates, each rejected by word_at in a few instructions;
 * for the recorder's five words and a 200-byte trade frame this is a third of pair_mask's
 * cost). */
static int has_word_fs(const unsigned char *s, Py_ssize_t len, const words_t *W) {
    const __m128i fold = _mm_set1_epi8(0x20);
    const __m128i f0 = _mm_set1_epi8((char)W->first[0]), f1 = _mm_set1_epi8((char)W->first[1]);
    const __m128i f2 = _mm_set1_epi8((char)W->first[2]), f3 = _mm_set1_epi8((char)W->first[3]);
    const __m128i s0 = _mm_set1_epi8((char)W->second[0]), s1 = _mm_set1_epi8((char)W->second[1]);
    const __m128i s2 = _mm_set1_epi8((char)W->second[2]), s3 = _mm_set1_epi8((char)W->second[3]);
    for (Py_ssize_t j = 0;; j += 16) {
        Py_ssize_t at = j;
        unsigned keep = 0xFFFFu;
        if (j + 17 > len) {  /* the last window ends at the end: drop the positions seen */
            at = len - 17;
            keep = ~((1u << (j - at)) - 1u);
        }
        __m128i a = _mm_or_si128(_mm_loadu_si128((const __m128i *)(s + at)), fold);
        __m128i b = _mm_or_si128(_mm_loadu_si128((const __m128i *)(s + at + 1)), fold);
        __m128i fa = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(a, f0), _mm_cmpeq_epi8(a, f1)),
                                  _mm_or_si128(_mm_cmpeq_epi8(a, f2), _mm_cmpeq_epi8(a, f3)));
        __m128i sb = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(b, s0), _mm_cmpeq_epi8(b, s1)),
                                  _mm_or_si128(_mm_cmpeq_epi8(b, s2), _mm_cmpeq_epi8(b, s3)));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(fa, sb)) & keep;
        while (mask) {
            if (word_at_cand(s, len, at + (Py_ssize_t)ctz32(mask), W)) return 1;
            mask &= mask - 1;
        }
        if (j + 17 >= len) return 0;  /* (a word cannot start at the very last byte) */
    }
}

static int has_word(const unsigned char *s, Py_ssize_t len, const words_t *W) {
    __m128i firsts[16], seconds[16];  /* each word's first two letters, in every lane */
    if (len < 17) {  /* too short for a window: position by position */
        for (Py_ssize_t j = 0; j < len; j++)
            if (word_at(s, len, j, W)) return 1;
        return 0;
    }
    if (W->fs) return has_word_fs(s, len, W);
    for (Py_ssize_t w = 0; w < W->nw; w++) {
        firsts[w] = _mm_set1_epi8((char)W->wp[w][0]);
        seconds[w] = _mm_set1_epi8((char)W->wp[w][1]);
    }
    Py_ssize_t j = 0;
    for (;; j += 16) {
        unsigned mask;
        Py_ssize_t at = j;
        if (j + 17 <= len) {
            mask = pair_mask(s + j, W, firsts, seconds);
        } else {  /* the last window ends at the end: drop the positions already seen */
            at = len - 17;
            mask = pair_mask(s + at, W, firsts, seconds) & ~((1u << (j - at)) - 1u);
        }
        while (mask) {
            if (word_at_cand(s, len, at + (Py_ssize_t)ctz32(mask), W)) return 1;
            mask &= mask - 1;
        }
        if (j + 17 >= len) return 0;  /* (a word cannot start at the very last byte) */
    }
}
#else
/* May s hold a credential word? One pass of the rolling key, no stores (without SSE2). */
static int has_word(const unsigned char *s, Py_ssize_t len, const words_t *W) {
    const unsigned char *tri = W->tri;
    unsigned h = 0;
    for (Py_ssize_t j = 0; j < len; j++) {
        h = ((h << 5) | (s[j] & 31u)) & 0x7FFFu;
        if (((tri[h >> 3] >> (h & 7)) & 1u) && j >= 2 && word_at(s, len, j - 2, W)) return 1;
    }
    return 0;
}

#endif

/* The escaping copy of one byte that is not a control character or >= 0x80 (branch-free:
 * quotes are frequent in JSON). */
#define PUT_PLAIN(c, k) do { out[pos] = '\\'; out[pos + (k)] = (char)(c); pos += 1 + (k); } while (0)

/* Escapes s into out as json.encoder.encode_basestring does (without the quotes); returns the
 * bytes written, or -1 if s is not valid UTF-8. Eight bytes at a time while none needs care. */
static Py_ssize_t escape_scalar(const unsigned char *s, Py_ssize_t len, char *out) {
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    Py_ssize_t pos = 0, j = 0;
    while (j < len) {
        if (j + 8 <= len) {
            uint64_t x;
            memcpy(&x, s + j, 8);
            uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
            /* a high bit set where a byte is '"', '\\', < 0x20 or >= 0x80 (maybe falsely for
             * the byte after such a byte: those blocks take the byte-wise path) */
            uint64_t t = ((q - ones) & ~q) | ((b - ones) & ~b) | (x - ones * 0x20) | x;
            if (!(t & high)) {
                memcpy(out + pos, &x, 8);
                pos += 8;
                j += 8;
                continue;
            }
        }
        Py_ssize_t stop = j + 8 < len ? j + 8 : len;
        while (j < stop) {
            unsigned char c = s[j];
            unsigned char k = CLS[c];
            if (k < 2) {
                PUT_PLAIN(c, k);
                j++;
                continue;
            }
            if (c >= 0x80) {
                Py_ssize_t n = utf8_seq(s + j, len - j);
                if (n == 0) return -1;
                memcpy(out + pos, s + j, (size_t)n);
                pos += n;
                j += n;
                continue;
            }
            out[pos++] = '\\';
            switch (c) {
            case '\n': out[pos++] = 'n'; break;
            case '\r': out[pos++] = 'r'; break;
            case '\t': out[pos++] = 't'; break;
            case '\b': out[pos++] = 'b'; break;
            case '\f': out[pos++] = 'f'; break;
            default:
                out[pos++] = 'u'; out[pos++] = '0'; out[pos++] = '0';
                out[pos++] = HEX[c >> 4]; out[pos++] = HEX[c & 15];
            }
            j++;
        }
    }
    return pos;
}

/* ---- Lines: the reader-side formatter --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    char *buf;                   /* the frames appended since the last take(), as records */
    size_t len, cap, limit;
    size_t bound;                /* at most this many bytes once formatted */
    char *spare;                 /* a record buffer take() is done with, for the next */
    size_t spare_cap;
    unsigned long long total;    /* frames ever appended: the offset of the next one */
    unsigned long long lines;    /* frames appended since the last take() */
    unsigned long long dropped;  /* frames not recorded: the buffer was full */
    double base_ms, mono0;
    int closed;
    words_t W;
    PyObject *words;             /* the tuple of bytes W points into */
    PyObject *secrets_seen;      /* the tuple of str last passed */
    PyObject *secret_bytes;      /* ... and its values as UTF-8 bytes */
    PyObject *clock;             /* bind_tap: time.monotonic */
} Lines;

static int Lines_init(Lines *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"base_ms", "mono0", "words", "limit", NULL};
    PyObject *words;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ddO!n", kwlist, &self->base_ms, &self->mono0,
                                     &PyTuple_Type, &words, &limit))
        return -1;
    Py_ssize_t nw = PyTuple_GET_SIZE(words);
    if (nw > 16) {
        PyErr_SetString(PyExc_ValueError, "at most 16 words");
        return -1;
    }
    memset(&self->W, 0, sizeof self->W);
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *w = PyTuple_GET_ITEM(words, i);
        if (!PyBytes_Check(w)) { PyErr_SetString(PyExc_TypeError, "words must be bytes"); return -1; }
        const unsigned char *wp = (const unsigned char *)PyBytes_AS_STRING(w);
        Py_ssize_t wl = PyBytes_GET_SIZE(w);
        if (wl < 3) {
            PyErr_SetString(PyExc_ValueError, "words must be at least 3 bytes long");
            return -1;
        }
        for (Py_ssize_t k = 0; k < wl; k++) {
            if (wp[k] >= 0x80 || wp[k] != lower(wp[k])) {
                PyErr_SetString(PyExc_ValueError, "words must be lowercase ASCII");
                return -1;
            }
        }
        if (wp[0] < 'a' || wp[0] > 'z' || wp[1] < 'a' || wp[1] > 'z') {  /* has_word folds case */
            PyErr_SetString(PyExc_ValueError, "words must begin with two letters");
            return -1;
        }
        self->W.wp[i] = wp;
        self->W.wl[i] = wl;
        unsigned h = TRI(wp[0], wp[1], wp[2]);
        self->W.tri[h >> 3] |= (unsigned char)(1u << (h & 7));
    }
    self->W.nw = nw;
    /* the distinct first and second letters, for has_word_fs (four of each at most) */
    int nf = 0, ns = 0, fits = 1;
    for (Py_ssize_t i = 0; i < nw && fits; i++) {
        unsigned char c0 = self->W.wp[i][0], c1 = self->W.wp[i][1];
        int k;
        for (k = 0; k < nf && self->W.first[k] != c0; k++) {}
        if (k == nf) { if (nf == 4) fits = 0; else self->W.first[nf++] = c0; }
        for (k = 0; k < ns && self->W.second[k] != c1; k++) {}
        if (k == ns) { if (ns == 4) fits = 0; else self->W.second[ns++] = c1; }
    }
    self->W.fs = fits && nw > 0;
    for (Py_ssize_t i = 0; i < nw; i++)
        self->W.by_first[self->W.wp[i][0] & 31u] |= (unsigned short)(1u << i);
    Py_INCREF(words);  /* W points into its bytes */
    Py_XSETREF(self->words, words);
    Py_CLEAR(self->secrets_seen);
    Py_XSETREF(self->secret_bytes, PyTuple_New(0));
    if (self->secret_bytes == NULL) return -1;
    self->limit = limit > 0 ? (size_t)limit : 0;
    return 0;
}

static void Lines_unbind(Lines *self) {
    Py_CLEAR(self->clock);
}

static void Lines_dealloc(Lines *self) {
    Lines_unbind(self);
    PyMem_RawFree(self->buf);
    PyMem_RawFree(self->spare);
    Py_XDECREF(self->words);
    Py_XDECREF(self->secrets_seen);
    Py_XDECREF(self->secret_bytes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Lines_secrets(Lines *self, PyObject *secrets) {
    if (secrets == self->secrets_seen) return 0;
    if (!PyTuple_Check(secrets)) { PyErr_SetString(PyExc_TypeError, "secrets must be a tuple"); return -1; }
    Py_ssize_t n = PyTuple_GET_SIZE(secrets);
    PyObject *out = PyTuple_New(n);
    if (out == NULL) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyTuple_GET_ITEM(secrets, i);
        PyObject *b = PyUnicode_Check(v) ? PyUnicode_AsUTF8String(v) : NULL;
        if (b == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "secrets must be str");
            Py_DECREF(out);
            return -1;
        }
        PyTuple_SET_ITEM(out, i, b);
    }
    Py_INCREF(secrets);
    Py_XSETREF(self->secrets_seen, secrets);
    Py_XSETREF(self->secret_bytes, out);
    return 0;
}

/* escape_scalar's result, sixteen bytes at a time with SSE2. */
static Py_ssize_t escape(const unsigned char *s, Py_ssize_t len, char *out) {
#ifdef RECFAST_SSE2
    /* sixteen bytes at a time: copy them all, then keep those before the first special one
     * (JSON has a quote every few bytes: one load per special byte, no per-byte branch) */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i c1f = _mm_set1_epi8(0x1F);
    Py_ssize_t pos = 0, j = 0;
    while (j + 16 <= len) {
        __m128i x = _mm_loadu_si128((const __m128i *)(s + j));
        __m128i quoted = _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash));
        unsigned qmask = (unsigned)_mm_movemask_epi8(quoted);
        unsigned other = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, c1f), x)) |
                         (unsigned)_mm_movemask_epi8(x); /* x <= 0x1F, x >= 0x80 */
        unsigned mask = qmask | other;
        _mm_storeu_si128((__m128i *)(out + pos), x);
        if (mask == 0) {
            pos += 16;
            j += 16;
            continue;
        }
        if (other == 0 && j + 32 <= len) {
            /* only quotes and backslashes (JSON's every few bytes): escape each in place,
             * re-storing the rest of the block one byte further on after each (the load
             * stays inside s: j + 32 <= len) */
            unsigned src = 0;
            while (qmask) {
                unsigned b = ctz32(qmask);
                qmask &= qmask - 1;
                pos += b - src; /* the bytes before it are in place */
                out[pos] = '\\';
                out[pos + 1] = (char)s[j + b];
                pos += 2;
                src = b + 1;
                _mm_storeu_si128((__m128i *)(out + pos),
                                 _mm_loadu_si128((const __m128i *)(s + j + src)));
            }
            pos += 16 - src;
            j += 16;
            continue;
        }
        unsigned first = ctz32(mask);
        pos += first;
        j += first;
        unsigned char c = s[j];
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
            j++;
            continue;
        }
        /* a control character or a UTF-8 sequence: the scalar path for this one */
        Py_ssize_t q = c >= 0x80 ? utf8_seq(s + j, len - j) : 1;
        if (q == 0) return -1;
        Py_ssize_t e = escape_scalar(s + j, q, out + pos);
        if (e < 0) return -1;
        pos += e;
        j += q;
    }
    Py_ssize_t e = escape_scalar(s + j, len - j, out + pos);
    return e < 0 ? -1 : pos + e;
#else
    return escape_scalar(s, len, out);
#endif
}

/* append(payload, conn, mono): one received frame, copied for take() to scan and format
 * (dropped and counted when the buffer is at its limit; discarded after close()). */
static PyObject *Lines_append(Lines *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyUnicode_Check(args[1]) || !PyFloat_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "append(payload: bytes, conn: str, mono: float)");
        return NULL;
    }
    if (self->closed) Py_RETURN_NONE;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t clen;
    const char *conn = PyUnicode_AsUTF8AndSize(args[1], &clen);
    if (conn == NULL) return NULL;
    size_t need = REC_HEAD + (size_t)clen + (size_t)len;
    if (self->limit && self->len + need > self->limit) {  /* the writer is not keeping up */
        self->dropped++;
        Py_RETURN_NONE;
    }
    if (self->len + need > self->cap) {
        if (self->buf == NULL && self->spare != NULL) {
            self->buf = self->spare;
            self->cap = self->spare_cap;
            self->spare = NULL;
        }
        if (self->len + need > self->cap) {
            size_t cap = self->cap ? self->cap : 65536;
            while (cap < self->len + need) cap *= 2;
            char *nb = PyMem_RawRealloc(self->buf, cap);
            if (nb == NULL) return PyErr_NoMemory();
            self->buf = nb;
            self->cap = cap;
        }
    }
    /* the record: mono, the two lengths, conn, payload; take() formats it into its line */
    char *out = self->buf + self->len;
    double m = PyFloat_AS_DOUBLE(args[2]);
    uint32_t lens[2] = {(uint32_t)clen, (uint32_t)len};
    memcpy(out, &m, sizeof m);
    memcpy(out + sizeof m, lens, sizeof lens);
    memcpy(out + REC_HEAD, conn, (size_t)clen);
    memcpy(out + REC_HEAD + clen, s, (size_t)len);
    self->len += need;
    self->bound += LINE_BOUND((size_t)clen, (size_t)len);
    self->total++;
    self->lines++;
    Py_RETURN_NONE;
}

/* What take() scans every frame for, held for the time the GIL is released. */
typedef struct {
    const words_t *W;
    const unsigned char **sp;  /* the remembered secrets, as UTF-8 */
    Py_ssize_t *sl;
    Py_ssize_t ns;
} scan_t;

/* Must this frame take the general (scrubbing) path: not UTF-8, or maybe a credential? */
static int declines(const unsigned char *conn, size_t clen, const unsigned char *s, size_t len,
                    const scan_t *scan) {
    if (scan->W->nw && has_word(s, (Py_ssize_t)len, scan->W)) return 1;
    for (Py_ssize_t w = 0; w < scan->ns; w++)
        if (has_bytes(s, (Py_ssize_t)len, scan->sp[w], scan->sl[w])) return 1;
    return !valid_utf8(s, (Py_ssize_t)len) || !valid_utf8(conn, (Py_ssize_t)clen);
}

/* Formats the records in raw[0:rawlen] into their lines at out (room for their bound), the
 * start of each line in starts; a declined frame gets no line (its start is the next one's)
 * and its index and place in raw go to decl / decl_at. Returns the bytes written. No Python
 * API: take() calls it with the GIL released. */
static size_t format_records(const char *raw, size_t rawlen, char *out, long long *starts,
                             double base_ms, double mono0, const scan_t *scan, size_t *decl,
                             size_t *decl_at, size_t *ndecl) {
    size_t pos = 0, at = 0, i = 0, nd = 0;
    while (at < rawlen) {
        double m;
        uint32_t lens[2];
        size_t here = at;
        memcpy(&m, raw + at, sizeof m);
        memcpy(lens, raw + at + sizeof m, sizeof lens);
        const unsigned char *conn = (const unsigned char *)raw + at + REC_HEAD;
        const unsigned char *text = conn + lens[0];
        at += REC_HEAD + lens[0] + lens[1];
        starts[i] = (long long)pos;
        if (declines(conn, lens[0], text, lens[1], scan)) {
            decl[nd] = i++;
            decl_at[nd++] = here;
            continue;
        }
        i++;
        memcpy(out + pos, "{\"t\":", 5);
        pos += 5;
        pos += put_ll(out + pos, (long long)(base_ms + m * 1000.0));
        memcpy(out + pos, ",\"us\":", 6);
        pos += 6;
        pos += put_ll(out + pos, (long long)((m - mono0) * 1e6));
        memcpy(out + pos, ",\"conn\":\"", 9);
        pos += 9;
        pos += (size_t)escape(conn, lens[0], out + pos);  /* valid UTF-8: checked above */
        memcpy(out + pos, "\",\"ev\":\"recv\",\"text\":\"", 22);
        pos += 22;
        pos += (size_t)escape(text, lens[1], out + pos);
        memcpy(out + pos, "\"}\n", 3);
        pos += 3;
    }
    *ndecl = nd;
    return pos;
}

/* The declined frames as (index, conn, payload, mono), from their records in raw. */
static PyObject *declined_list(const char *raw, const size_t *decl, const size_t *decl_at,
                               size_t nd) {
    PyObject *list = PyList_New((Py_ssize_t)nd);
    if (list == NULL) return NULL;
    for (size_t k = 0; k < nd; k++) {
        double m;
        uint32_t lens[2];
        const char *rec = raw + decl_at[k];
        memcpy(&m, rec, sizeof m);
        memcpy(lens, rec + sizeof m, sizeof lens);
        PyObject *item = Py_BuildValue("(nNNd)", (Py_ssize_t)decl[k],
                                       PyUnicode_DecodeUTF8(rec + REC_HEAD, lens[0], "strict"),
                                       PyBytes_FromStringAndSize(rec + REC_HEAD + lens[0], lens[1]),
                                       m);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, item);
    }
    return list;
}

/* take(secrets) -> (data, end, frames, starts, declined): the lines of the frames appended
 * since the last take, the offset (in frames) just past them, how many frames that is, where
 * each frame's line starts in data (native 8-byte integers: memoryview(starts).cast("q")),
 * and the frames for the general (scrubbing) path as (index, conn, payload, mono): not UTF-8,
 * or holding a credential word or one of `secrets` (a tuple of str). The scan and the
 * escaping, nearly all of a line's cost, run here on the writer's thread with the GIL
 * released, not on the reader. */
static PyObject *Lines_take(Lines *self, PyObject *secrets) {
    if (Lines_secrets(self, secrets) < 0) return NULL;
    char *raw = self->buf;
    size_t rawlen = self->len, rawcap = self->cap, bound = self->bound;
    /* the offset past these frames: read now, as the readers go on appending while the GIL
     * is released below */
    unsigned long long n = self->lines, end = self->total;
    self->buf = NULL;
    self->len = self->cap = self->bound = 0;
    self->lines = 0;
    PyObject *sb = self->secret_bytes;  /* kept alive while the GIL is released */
    Py_INCREF(sb);
    Py_ssize_t ns = PyTuple_GET_SIZE(sb);
    PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound);
    PyObject *starts = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * sizeof(long long)));
    size_t *decl = PyMem_RawMalloc((n ? n : 1) * 2 * sizeof(size_t));
    const unsigned char **sp = PyMem_RawMalloc((ns ? ns : 1) * sizeof *sp);
    Py_ssize_t *sl = PyMem_RawMalloc((ns ? ns : 1) * sizeof *sl);
    PyObject *result = NULL;
    if (data == NULL || starts == NULL || decl == NULL || sp == NULL || sl == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        self->dropped += n;  /* lost: counted, as when the buffer is full */
        goto done;
    }
    for (Py_ssize_t w = 0; w < ns; w++) {
        PyObject *x = PyTuple_GET_ITEM(sb, w);
        sp[w] = (const unsigned char *)PyBytes_AS_STRING(x);
        sl[w] = PyBytes_GET_SIZE(x);
    }
    scan_t scan = {&self->W, sp, sl, ns};
    size_t written, nd = 0;
    double base_ms = self->base_ms, mono0 = self->mono0;
    char *out = PyBytes_AS_STRING(data);  /* ours alone until we return it */
    long long *at = (long long *)PyBytes_AS_STRING(starts);
    Py_BEGIN_ALLOW_THREADS
    written = format_records(raw, rawlen, out, at, base_ms, mono0, &scan, decl, decl + n, &nd);
    Py_END_ALLOW_THREADS
    PyObject *declined = declined_list(raw, decl, decl + n, nd);
    if (declined == NULL) goto done;
    if (_PyBytes_Resize(&data, (Py_ssize_t)written) < 0) {  /* data is NULL after a failure */
        Py_DECREF(declined);
        goto done;
    }
    result = Py_BuildValue("(OKKON)", data, end, n, starts, declined);
done:
    if (raw != NULL) {
        if (self->spare == NULL && rawcap <= (size_t)4 << 20) {  /* after a burst: freed */
            self->spare = raw;
            self->spare_cap = rawcap;
        } else {
            PyMem_RawFree(raw);
        }
    }
    PyMem_RawFree(decl);
    PyMem_RawFree(sp);
    PyMem_RawFree(sl);
    Py_XDECREF(data);
    Py_XDECREF(starts);
    Py_DECREF(sb);
    return result;
}

static PyObject *Lines_close(Lines *self, PyObject *unused) {
    self->closed = 1;
    Lines_unbind(self);
    Py_RETURN_NONE;
}

/* bind_tap(clock): the clock received() reads (time.monotonic). */
static PyObject *Lines_bind_tap(Lines *self, PyObject *clock) {
    if (!PyCallable_Check(clock)) {
        PyErr_SetString(PyExc_TypeError, "bind_tap(clock)");
        return NULL;
    }
    Py_INCREF(clock);
    Py_XSETREF(self->clock, clock);
    Py_RETURN_NONE;
}

/* received(conn, payload): the recorder's Tap.received in one call, append(payload, conn,
 * clock()). After close(): nothing. */
static PyObject *Lines_received(Lines *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "received(conn, payload)");
        return NULL;
    }
    if (self->closed) Py_RETURN_NONE;
    if (self->clock == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "received() before bind_tap()");
        return NULL;
    }
    PyObject *mono = PyObject_CallNoArgs(self->clock);
    if (mono == NULL) return NULL;
    PyObject *argv[3] = {args[1], args[0], mono};
    PyObject *r = Lines_append(self, argv, 3);
    Py_DECREF(mono);
    return r;
}

static PyMemberDef Lines_members[] = {
    {"total", T_ULONGLONG, offsetof(Lines, total), READONLY, "frames ever appended"},
    {"dropped", T_ULONGLONG, offsetof(Lines, dropped), READONLY, "frames dropped: buffer full"},
    {"pending", T_ULONGLONG, offsetof(Lines, lines), READONLY, "lines not taken yet"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Lines_methods[] = {
    {"append", (PyCFunction)(void (*)(void))Lines_append, METH_FASTCALL,
     "append(payload, conn, mono, secrets) -> bool"},
    {"bind_tap", (PyCFunction)Lines_bind_tap, METH_O, "bind_tap(clock): what received() reads"},
    {"received", (PyCFunction)(void (*)(void))Lines_received, METH_FASTCALL,
     "received(conn, payload): append(payload, conn, clock())"},
    {"take", (PyCFunction)Lines_take, METH_O,
     "take(secrets) -> (data, end, frames, starts, declined)"},
    {"close", (PyCFunction)Lines_close, METH_NOARGS, "discard every later append"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LinesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sixmm.protocol._recfast.Lines",
    .tp_basicsize = sizeof(Lines),
    .tp_dealloc = (destructor)Lines_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lines(base_ms, mono0, words, limit): received frames formatted as recording lines",
    .tp_methods = Lines_methods,
    .tp_members = Lines_members,
    .tp_init = (initproc)Lines_init,
    .tp_new = PyType_GenericNew,
};

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

/* Parse one recv line (s, n). 1: *t, *us, *conn (new ref) and *payload (new ref) are set;
 * 0: not a recv line in the writer's form; -1: an exception is set. */
static int parse_line(const char *s, Py_ssize_t n, long long *t, long long *us, PyObject **conn_out,
                      PyObject **payload_out) {
    Py_ssize_t i = 0;
    if (!expect(s, n, &i, "{\"t\":") || !parse_ll(s, n, &i, t)) return 0;
    if (!expect(s, n, &i, ",\"us\":") || !parse_ll(s, n, &i, us)) return 0;
    if (!expect(s, n, &i, ",\"conn\":\"")) return 0;
    Py_ssize_t c0 = i;
    while (i < n && s[i] != '"' && s[i] != '\\') i++;
    if (i >= n || s[i] != '"') return 0;
    Py_ssize_t c1 = i++;
    if (!expect(s, n, &i, ",\"ev\":\"recv\",\"text\":\"")) return 0;
    char stack[4096];
    char *buf = stack;
    if (n - i + 1 > (Py_ssize_t)sizeof(stack)) {
        buf = PyMem_Malloc((size_t)(n - i + 1));
        if (buf == NULL) { PyErr_NoMemory(); return -1; }
    }
    Py_ssize_t o = 0;
    int ok = 0;
#ifdef RECFAST_SSE2
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i c1f = _mm_set1_epi8(0x1F);
#endif
    while (i < n) {
#ifdef RECFAST_SSE2
        /* sixteen bytes at a time: store them all, keep those before the first quote,
         * backslash or control character (the output never runs ahead of the input, so the
         * store stays inside buf: o + 16 <= i - start + 16 <= n - start) */
        while (i + 16 <= n) {
            __m128i x = _mm_loadu_si128((const __m128i *)(s + i));
            unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                _mm_cmpeq_epi8(_mm_min_epu8(x, c1f), x)));
            _mm_storeu_si128((__m128i *)(buf + o), x);
            if (mask == 0) {
                i += 16;
                o += 16;
                continue;
            }
            unsigned b = ctz32(mask);
            i += b;
            o += b;
            break;
        }
        if (i >= n) break;
#endif
        char c = s[i];
        if (c == '"') { i++; ok = 1; break; }
        if ((unsigned char)c < 0x20) break;
        if (c != '\\') {
            /* copy the run up to the next quote or backslash at once */
            Py_ssize_t j = i + 1;
            while (j < n && s[j] != '"' && s[j] != '\\' && (unsigned char)s[j] >= 0x20) j++;
            memcpy(buf + o, s + i, (size_t)(j - i));
            o += j - i;
            i = j;
            continue;
        }
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
    /* a recording has a handful of connection names: the last one is reused (its hash too) */
    static PyObject *last_conn = NULL;
    PyObject *conn = NULL;
    if (last_conn != NULL) {
        Py_ssize_t ln;
        const char *lu = PyUnicode_AsUTF8AndSize(last_conn, &ln);
        if (lu != NULL && ln == c1 - c0 && memcmp(lu, s + c0, (size_t)ln) == 0) {
            conn = last_conn;
            Py_INCREF(conn);
        }
    }
    if (conn == NULL) {
        conn = PyUnicode_DecodeUTF8(s + c0, c1 - c0, "strict");
        if (conn == NULL) { PyErr_Clear(); goto fail; }
        Py_INCREF(conn);
        Py_XSETREF(last_conn, conn);
    }
    PyObject *payload = PyBytes_FromStringAndSize(buf, o);
    if (buf != stack) PyMem_Free(buf);
    if (payload == NULL) { Py_DECREF(conn); return -1; }
    *conn_out = conn;
    *payload_out = payload;
    return 1;
fail:
    if (buf != stack) PyMem_Free(buf);
    return 0;
}

static PyObject *parse_recv(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) { PyErr_SetString(PyExc_TypeError, "line must be bytes"); return NULL; }
    long long t, us;
    PyObject *conn, *payload;
    int r = parse_line(PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), &t, &us, &conn, &payload);
    if (r < 0) return NULL;
    if (r == 0) Py_RETURN_NONE;
    return Py_BuildValue("(LLNN)", t, us, conn, payload);
}

/* The payload of a subscribe/unsubscribe ack (the replay rewrites its id first): it has an
 * "id" and no "topic", the same test as the Python loop's. */
static int ack_like(PyObject *payload) {
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(payload);
    Py_ssize_t n = PyBytes_GET_SIZE(payload);
    return !has_bytes(p, n, (const unsigned char *)"\"topic\"", 7) &&
           has_bytes(p, n, (const unsigned char *)"\"id\"", 4);
}

static PyObject *s_open_now, *s_failed, *s_messages, *s_bytes_closed, *s_report, *s_mono, *s_t_ms,
    *s_actions;

static int bump(PyObject *obj, PyObject *name, Py_ssize_t by) {
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) return -1;
    PyObject *inc = PyLong_FromSsize_t(by);
    if (inc == NULL) { Py_DECREF(v); return -1; }
    PyObject *sum = PyNumber_Add(v, inc);
    Py_DECREF(v);
    Py_DECREF(inc);
    if (sum == NULL) return -1;
    int r = PyObject_SetAttr(obj, name, sum);
    Py_DECREF(sum);
    return r;
}

/* feed_recv(data, pos, handlers, clock, closed_exc, protocol_exc, quiet) -> (next, fed)
 * The replay's hot loop (speed None) over data, a chunk of complete recording lines (each
 * ends in a newline): from the line at offset pos, each received text frame in the writer's
 * form is fed at once -- clock._mono/_t_ms set to its times; skipped when its connection is
 * not in handlers ({name: (conn, on_message, receive, engine, apply)}) or is not open or
 * failed; else conn.messages and conn._bytes_closed counted and the frame handed on as
 * Connection._read_frames does: under quiet bytes, receive(payload, clock._mono) and, when
 * engine.actions is not empty, apply(conn); a larger one to on_message(conn, payload)
 * (closed_exc ignored, protocol_exc handed to conn._report). Stops at the first line it does
 * not take (any other event, any other form, an ack, whose id the caller maps): returns its
 * offset and how many lines were fed. Exactly what sixmm/replay.py's Python loop does. */
static int feed_one(PyObject *conn, PyObject *handler, PyObject *payload, PyObject *now,
                    Py_ssize_t quiet, PyObject *closed_exc, PyObject *protocol_exc) {
    PyObject *on_message = PyTuple_GET_ITEM(handler, 1), *receive = PyTuple_GET_ITEM(handler, 2);
    PyObject *engine = PyTuple_GET_ITEM(handler, 3), *apply = PyTuple_GET_ITEM(handler, 4);
    PyObject *o = PyObject_GetAttr(conn, s_open_now);
    if (o == NULL) return -1;
    int go = PyObject_IsTrue(o);
    Py_DECREF(o);
    if (go <= 0) return go;
    PyObject *f = PyObject_GetAttr(conn, s_failed);
    if (f == NULL) return -1;
    go = f == Py_None;
    Py_DECREF(f);
    if (!go) return 0;
    if (bump(conn, s_messages, 1) < 0 || bump(conn, s_bytes_closed, PyBytes_GET_SIZE(payload)) < 0)
        return -1;
    PyObject *res;
    if (PyBytes_GET_SIZE(payload) < quiet) {
        PyObject *rargs[2] = {payload, now};
        res = PyObject_Vectorcall(receive, rargs, 2, NULL);
        if (res != NULL) {
            Py_DECREF(res);
            PyObject *actions = PyObject_GetAttr(engine, s_actions);
            if (actions == NULL) return -1;
            int any = PyObject_IsTrue(actions);
            Py_DECREF(actions);
            if (any < 0) return -1;
            if (any) {
                res = PyObject_CallOneArg(apply, conn);
            } else {
                Py_INCREF(Py_None);
                res = Py_None;
            }
        }
    } else {
        PyObject *cargs[2] = {conn, payload};
        res = PyObject_Vectorcall(on_message, cargs, 2, NULL);
    }
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (PyErr_ExceptionMatches(closed_exc)) {
        PyErr_Clear();
        return 0;
    }
    if (!PyErr_ExceptionMatches(protocol_exc)) return -1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (ev != NULL && tb != NULL) PyException_SetTraceback(ev, tb);
    PyObject *rr = PyObject_CallMethodOneArg(conn, s_report, ev ? ev : Py_None);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
    if (rr == NULL) return -1;
    Py_DECREF(rr);
    return 0;
}

static PyObject *feed_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyBytes_Check(args[0]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "feed_recv(data: bytes, pos, handlers: dict, clock, "
                                         "closed, protocol, quiet)");
        return NULL;
    }
    PyObject *data = args[0], *handlers = args[2], *clock = args[3];
    PyObject *closed_exc = args[4], *protocol_exc = args[5];
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t quiet = PyLong_AsSsize_t(args[6]);
    if (quiet == -1 && PyErr_Occurred()) return NULL;
    const char *s = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), fed = 0;
    if (pos < 0) pos = 0;
    Py_INCREF(data); /* bytes never change; held while callbacks run */
    int err = 0;
    while (pos < n) {
        const char *nl = memchr(s + pos, '\n', (size_t)(n - pos));
        Py_ssize_t end = nl != NULL ? (Py_ssize_t)(nl - s) + 1 : n;
        long long t, us;
        PyObject *name, *payload;
        int r = parse_line(s + pos, end - pos, &t, &us, &name, &payload);
        if (r < 0) { err = 1; break; }
        if (r == 0) break;
        PyObject *handler = PyDict_GetItemWithError(handlers, name); /* borrowed */
        Py_DECREF(name);
        if (handler == NULL && PyErr_Occurred()) { Py_DECREF(payload); err = 1; break; }
        if (handler != NULL && ack_like(payload)) { Py_DECREF(payload); break; }
        PyObject *now = PyFloat_FromDouble((double)us / 1e6), *v = NULL;
        if (now == NULL || PyObject_SetAttr(clock, s_mono, now) < 0) err = 1;
        if (!err) {
            v = PyLong_FromLongLong(t);
            if (v == NULL || PyObject_SetAttr(clock, s_t_ms, v) < 0) err = 1;
            Py_XDECREF(v);
        }
        fed++;
        if (!err && handler != NULL) {
            if (!PyTuple_Check(handler) || PyTuple_GET_SIZE(handler) != 5) {
                PyErr_SetString(PyExc_TypeError,
                                "handlers values must be (conn, on_message, receive, engine, apply)");
                err = 1;
            } else {
                Py_INCREF(handler); /* the call may run code that changes handlers */
                PyObject *conn = PyTuple_GET_ITEM(handler, 0);
                if (feed_one(conn, handler, payload, now, quiet, closed_exc, protocol_exc) < 0)
                    err = 1;
                Py_DECREF(handler);
            }
        }
        Py_XDECREF(now);
        Py_DECREF(payload);
        if (err) break;
        pos = end;
    }
    Py_DECREF(data);
    if (err) return NULL;
    return Py_BuildValue("(nn)", pos, fed);
}

static PyMethodDef methods[] = {
    {"parse_recv", parse_recv, METH_O, "parse_recv(line) -> (t, us, conn, payload) | None"},
    {"feed_recv", (PyCFunction)(void (*)(void))feed_recv, METH_FASTCALL,
     "feed_recv(data, pos, handlers, clock, closed, protocol, quiet) -> (next, fed)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recfast",
                                    "The recording writer's hot path in C.", -1, methods};

PyMODINIT_FUNC PyInit__recfast(void) {
    init_cls();
    struct { PyObject **slot; const char *name; } names[] = {
        {&s_open_now, "_open_now"}, {&s_failed, "_failed"}, {&s_messages, "messages"},
        {&s_bytes_closed, "_bytes_closed"}, {&s_report, "_report"}, {&s_mono, "_mono"},
        {&s_t_ms, "_t_ms"}, {&s_actions, "actions"},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        *names[k].slot = PyUnicode_InternFromString(names[k].name);
        if (*names[k].slot == NULL) return NULL;
    }
    if (PyType_Ready(&LinesType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&LinesType);
    if (PyModule_AddObject(m, "Lines", (PyObject *)&LinesType) < 0) {
        Py_DECREF(&LinesType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
