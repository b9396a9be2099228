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

static PyMethodDef methods[] = {
    {"levels", (PyCFunction)(void (*)(void))levels, METH_FASTCALL,
     "levels(raw, known) -> list of (price, qty) tuples, or None: see depth.py."},
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
    return PyModule_Create(&module_def);
}
