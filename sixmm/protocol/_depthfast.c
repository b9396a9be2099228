/*
 * sixmm.protocol._depthfast -- the fast path of depth.py's _levels(raw, side, known), in C.
 *
 * levels(raw, known) takes a list and returns a NEW list of (price, qty) tuples, exactly what
 * the pure fast path returns, when every entry is a list of exactly two exact str, the price
 * is in ``known`` or a valid price numeral, and the quantity is a valid numeral:
 *     numeral: 1-30 ASCII digits, optionally "." and 1-30 ASCII digits
 *     price:   a numeral with at least one non-zero digit
 * In EVERY other case it returns None and depth.py runs its pure code unchanged (which then
 * accepts, or raises its ProtocolError). It never raises except MemoryError (and whatever
 * ``known``'s own __contains__ raises, which the pure code would raise too): it never
 * accepts what the pure code rejects. It may return None for input the pure code accepts
 * (str subclasses), which only costs time.
 *
 * A separate module from _bookside: a different job (validation, not book state), no module
 * state, and depth.py then needs no import of the book module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_numeral.h"

/* 1 in known, 0 not, -1 error (exception set). price is an exact str. */
static int
in_known(PyObject *known, PyObject *price)
{
    if (PyDict_CheckExact(known))
        return PyDict_Contains(known, price);
    if (PyAnySet_CheckExact(known))
        return PySet_Contains(known, price);
    return PySequence_Contains(known, price);
}

static PyObject *
levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *raw, *known, *out;
    Py_ssize_t i;
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "levels(raw, known) takes exactly 2 arguments");
        return NULL;
    }
    raw = args[0];
    known = args[1];
    if (!PyList_CheckExact(raw))
        Py_RETURN_NONE;
    /* The raw levels are lists of two str (JSON arrays from the decoder): they can never be
     * part of a reference cycle, so the cyclic GC need not track them. Untracked here, before
     * anything below allocates, a snapshot's thousands of them are never walked or promoted
     * by the collections that the allocations of parsing and loading it trigger (a resync
     * storm decodes hundreds of snapshots in a burst: full collections of the whole heap
     * came every few snapshots). Tracking only decides what the GC walks; no result changes.
     * Nothing here can fail or run Python code. */
    for (i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *entry = PyList_GET_ITEM(raw, i);
        if (PyList_CheckExact(entry) && PyList_GET_SIZE(entry) == 2 &&
            PyUnicode_CheckExact(PyList_GET_ITEM(entry, 0)) &&
            PyUnicode_CheckExact(PyList_GET_ITEM(entry, 1)) && PyObject_GC_IsTracked(entry))
            PyObject_GC_UnTrack(entry);
    }
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    /* Like the pure loop: by index, re-reading the size, so a __contains__ that mutates raw
     * sees the same iteration as the pure code would. */
    for (i = 0; i < PyList_GET_SIZE(raw); i++) {
        PyObject *entry = PyList_GET_ITEM(raw, i);
        PyObject *price, *qty, *pair;
        int ok;
        if (!PyList_CheckExact(entry) || PyList_GET_SIZE(entry) != 2)
            goto fallback;
        price = PyList_GET_ITEM(entry, 0);
        qty = PyList_GET_ITEM(entry, 1);
        if (!PyUnicode_CheckExact(price) || !check_numeral(qty, 0))
            goto fallback;
        Py_INCREF(price);
        Py_INCREF(qty);
        /* An exact dict of exact str keys (a live book's prices) runs no Python code on a
         * lookup, so the order does not matter: the pattern first (a few ns), the lookup
         * (a probe into a cold 5,000-entry dict) only for what the pattern rejects. Any
         * other container: the pure order, the lookup first (it may run Python code). */
        if (PyDict_CheckExact(known)) {
            ok = check_numeral(price, 1);
            if (ok == 0)
                ok = PyDict_Contains(known, price);
        }
        else {
            ok = in_known(known, price);
            if (ok == 0)
                ok = check_numeral(price, 1);
        }
        {
            if (ok < 0) {
                /* the pure code hits the same call and raises (or falls back) itself */
                Py_DECREF(price);
                Py_DECREF(qty);
                if (PyErr_ExceptionMatches(PyExc_MemoryError))
                    goto error;
                PyErr_Clear();
                goto fallback;
            }
        }
        if (!ok) {
            Py_DECREF(price);
            Py_DECREF(qty);
            goto fallback;
        }
        pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(price);
            Py_DECREF(qty);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, price); /* steals */
        PyTuple_SET_ITEM(pair, 1, qty);
        /* two str: never part of a cycle; the GC would untrack it at its first pass anyway,
         * but a snapshot's thousands of pairs would first be walked (and promoted) by it */
        PyObject_GC_UnTrack(pair);
        if (PyList_Append(out, pair) < 0) {
            Py_DECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
    }
    return out;
fallback:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

/* -- parse: parse_depth's common case -------------------------------------------------- */

static PyObject *k_symbol, *k_type, *k_start, *k_end, *k_prev, *k_last, *k_bids, *k_asks;
static PyObject *a_symbol, *a_kind, *a_start, *a_end, *a_prev, *a_bids, *a_asks;
static PyObject *s_update;

/* 1: *out is value (borrowed) when it is absent/None (then Py_None) or an exact int in
 * [0, 2**63 - 1]; 0: anything else (the pure code decides); -1: a lookup error. */
static int
version(PyObject *data, PyObject *key, PyObject **out)
{
    int overflow = 0;
    long long v;
    PyObject *value = PyDict_GetItemWithError(data, key);
    if (value == NULL) {
        if (PyErr_Occurred())
            return -1;
        *out = Py_None;
        return 1;
    }
    *out = value;
    if (value == Py_None)
        return 1;
    if (!PyLong_CheckExact(value))
        return 0;
    v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return v >= 0;
}

/* a <= b for two exact ints that version() accepted */
static int
le(PyObject *a, PyObject *b)
{
    return PyLong_AsLongLong(a) <= PyLong_AsLongLong(b);
}

/* The levels of one side: raw absent/None gives [], a list goes through levels(); NULL with
 * no exception set: the pure code decides. */
static PyObject *
side_levels(PyObject *data, PyObject *key, PyObject *known)
{
    PyObject *raw = PyDict_GetItemWithError(data, key), *args[2], *out;
    if (raw == NULL)
        return PyErr_Occurred() ? NULL : PyList_New(0);
    if (raw == Py_None)
        return PyList_New(0);
    if (!PyList_CheckExact(raw))
        return NULL;
    Py_INCREF(raw);
    args[0] = raw;
    args[1] = known;
    out = levels(NULL, args, 2);
    Py_DECREF(raw);
    if (out == Py_None) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* parse(data, snapshot_hint, known_bids, known_asks, cls) -> a cls (DepthMsg) or None.
 * depth.parse_depth's common case: an exact dict whose "symbol" is absent, null or an exact
 * str; whose "type" is exactly "update" or absent/null (and snapshot_hint false); whose
 * versions are absent/null or exact ints in range, consistent (start <= end, prev < end,
 * prev == last when both are given), with an endVersion; and whose "bids"/"asks" are
 * absent, null or lists that levels() takes. The message is built as parse_depth builds it
 * (object.__new__ and one attribute store per field). Anything else, None: parse_depth runs
 * its pure code, which accepts or raises. */
static PyObject *
parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *data, *symbol, *kind, *start, *end, *prev, *last, *bids = NULL, *asks = NULL;
    PyObject *msg = NULL;
    PyTypeObject *cls;
    int ok;
    (void)module;
    if (nargs != 5 || !PyType_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "parse(data, snapshot_hint, known_bids, known_asks, cls): 5 arguments");
        return NULL;
    }
    data = args[0];
    cls = (PyTypeObject *)args[4];
    if (!PyDict_CheckExact(data) || args[1] != Py_False)
        Py_RETURN_NONE;
    symbol = PyDict_GetItemWithError(data, k_symbol);
    if (symbol == NULL)
        symbol = Py_None;
    kind = PyDict_GetItemWithError(data, k_type);
    if (kind == NULL)
        kind = Py_None;
    if (PyErr_Occurred())
        goto decline;
    if (symbol != Py_None && !PyUnicode_CheckExact(symbol))
        goto decline;
    if (kind != Py_None &&
        (!PyUnicode_CheckExact(kind) || PyUnicode_Compare(kind, s_update) != 0))
        goto decline;
    if ((ok = version(data, k_start, &start)) != 1 || (ok = version(data, k_end, &end)) != 1 ||
        (ok = version(data, k_prev, &prev)) != 1 || (ok = version(data, k_last, &last)) != 1)
        goto decline_or_error;
    if (end == Py_None)
        goto decline; /* missing: the pure code says so */
    if (last != Py_None) {
        if (prev != Py_None && !(le(prev, last) && le(last, prev)))
            goto decline;
        prev = last;
    }
    if ((start != Py_None && !le(start, end)) || (prev != Py_None && le(end, prev)))
        goto decline;
    bids = side_levels(data, k_bids, args[2]);
    if (bids == NULL)
        goto decline_or_error;
    asks = side_levels(data, k_asks, args[3]);
    if (asks == NULL)
        goto decline_or_error;
    msg = cls->tp_alloc(cls, 0);
    if (msg == NULL)
        goto error;
    if (PyObject_SetAttr(msg, a_symbol, symbol) < 0 || PyObject_SetAttr(msg, a_kind, kind) < 0 ||
        PyObject_SetAttr(msg, a_start, start) < 0 || PyObject_SetAttr(msg, a_end, end) < 0 ||
        PyObject_SetAttr(msg, a_prev, prev) < 0 || PyObject_SetAttr(msg, a_bids, bids) < 0 ||
        PyObject_SetAttr(msg, a_asks, asks) < 0)
        goto error;
    Py_DECREF(bids);
    Py_DECREF(asks);
    return msg;
decline_or_error:
    if (PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError))
            goto error;
        PyErr_Clear();
    }
decline:
    PyErr_Clear();
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    Py_RETURN_NONE;
error:
    Py_XDECREF(msg);
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    return NULL;
}

static PyMethodDef methods[] = {
    {"levels", (PyCFunction)(void (*)(void))levels, METH_FASTCALL,
     "levels(raw, known) -> list of (price, qty) tuples, or None: see depth.py."},
    {"parse", (PyCFunction)(void (*)(void))parse, METH_FASTCALL,
     "parse(data, snapshot_hint, known_bids, known_asks, cls) -> a cls or None: see "
     "depth.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sixmm.protocol._depthfast",
    "The fast path of sixmm.protocol.depth._levels, in C (optional).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__depthfast(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&k_symbol, "symbol"},       {&k_type, "type"},
        {&k_start, "startVersion"},  {&k_end, "endVersion"},
        {&k_prev, "prevEndVersion"}, {&k_last, "lastEndVersion"},
        {&k_bids, "bids"},           {&k_asks, "asks"},
        {&a_symbol, "symbol"},       {&a_kind, "kind"},
        {&a_start, "start"},         {&a_end, "end"},
        {&a_prev, "prev"},           {&a_bids, "bids"},
        {&a_asks, "asks"},           {&s_update, "update"},
    };
    size_t k;
    for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        *names[k].slot = PyUnicode_InternFromString(names[k].name);
        if (*names[k].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module_def);
}
