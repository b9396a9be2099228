/*
 * sixmm.protocol._wirefast -- two fast paths of decoding a frame into models, in C.
 *
 * opens(data) is frames.decode's nesting pre-count, data.count(b"{") + data.count(b"["), in
 * one pass over exact bytes (anything else: -1, and decode counts in Python). Only a frame
 * with more opening brackets than the depth limit is then walked for its real depth.
 *
 * trades(cls, data) is models._trades' common case: ``data`` is one trade object or a list
 * of them, every one an exact dict with
 *     "symbol"    a non-empty exact str
 *     "price"     an exact str numeral (see _numeral.h)
 *     "quantity"  an exact str numeral
 *     "side"      absent, null or an exact str (upper-cased, as opt_upper does)
 *     "tradeId"   an exact str
 *     "time"      an exact int
 * It returns the list of cls(symbol, Decimal(price), Decimal(quantity), side, tradeId, time,
 * the dict): what Trade.from_wire returns for such an object, whose first choice of every
 * alias is then the one present. In EVERY other case (a missing field, an alias, a number
 * where a string is usual, an exponent, a sign...) it returns None and models.py runs the
 * pure Trade.from_wire, the reference, on the whole push. It never raises except what
 * cls(...), Decimal(...) or str.upper() raise (MemoryError), so it never rejects what the
 * pure code accepts nor accepts what it rejects.
 *
 * Module state (the interned keys, decimal.Decimal) lives in static variables: single-phase
 * init, one interpreter, as in _bookside.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "structmember.h" /* T_OBJECT_EX, READONLY */

#include "_numeral.h"

static PyObject *key_symbol, *key_price, *key_quantity, *key_side, *key_trade_id, *key_time;
static PyObject *str_upper, *decimal_type;

/* bind(cls, names): the class whose instances trades() fills slot by slot, and the byte
 * offsets of its slots in field order. */
#define TRADE_FIELDS 7
static PyTypeObject *bound_cls;
static Py_ssize_t bound_offsets[TRADE_FIELDS];

/* -- opens ------------------------------------------------------------------------------ */

static PyObject *
opens(PyObject *module, PyObject *data)
{
    const unsigned char *p;
    Py_ssize_t i, n, count = 0;
    (void)module;
    if (!PyBytes_CheckExact(data))
        return PyLong_FromLong(-1);
    p = (const unsigned char *)PyBytes_AS_STRING(data);
    n = PyBytes_GET_SIZE(data);
    for (i = 0; i < n; i++)
        count += (p[i] == '{') | (p[i] == '[');
    return PyLong_FromSsize_t(count);
}

/* -- trades ----------------------------------------------------------------------------- */

/* d[key] (borrowed), NULL when absent; -1 into *err on a lookup error (never for exact str
 * keys in an exact dict, but the API allows it). */
static PyObject *
field(PyObject *d, PyObject *key, int *err)
{
    PyObject *value = PyDict_GetItemWithError(d, key);
    if (value == NULL && PyErr_Occurred())
        *err = 1;
    return value;
}

/* 1 when the exact str s has no lowercase ASCII letter and is ASCII: s.upper() == s. */
static int
is_upper_ascii(PyObject *s)
{
    const Py_UCS1 *p;
    Py_ssize_t i, n;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    if (!PyUnicode_IS_ASCII(s))
        return 0;
    p = PyUnicode_1BYTE_DATA(s);
    n = PyUnicode_GET_LENGTH(s);
    for (i = 0; i < n; i++)
        if (p[i] >= 'a' && p[i] <= 'z')
            return 0;
    return 1;
}

/* One trade: a new reference, Py_None (new reference) for "the pure code decides", NULL
 * on an error. */
static PyObject *
one_trade(PyObject *cls, PyObject *d)
{
    PyObject *symbol, *price, *qty, *side, *trade_id, *time;
    PyObject *argv[7], *result;
    int err = 0;
    if (!PyDict_CheckExact(d))
        Py_RETURN_NONE;
    symbol = field(d, key_symbol, &err);
    price = field(d, key_price, &err);
    qty = field(d, key_quantity, &err);
    side = field(d, key_side, &err);
    trade_id = field(d, key_trade_id, &err);
    time = field(d, key_time, &err);
    if (err) {
        PyErr_Clear(); /* the pure code's d.get() meets it again and decides */
        Py_RETURN_NONE;
    }
    if (symbol == NULL || !PyUnicode_CheckExact(symbol) || PyUnicode_GET_LENGTH(symbol) == 0)
        Py_RETURN_NONE;
    if (price == NULL || !check_numeral(price, 0) || qty == NULL || !check_numeral(qty, 0))
        Py_RETURN_NONE;
    if (side != NULL && side != Py_None && !PyUnicode_CheckExact(side))
        Py_RETURN_NONE;
    if (trade_id == NULL || !PyUnicode_CheckExact(trade_id))
        Py_RETURN_NONE;
    if (time == NULL || !PyLong_CheckExact(time))
        Py_RETURN_NONE;

    argv[0] = symbol;
    argv[1] = PyObject_CallOneArg(decimal_type, price);
    if (argv[1] == NULL)
        return NULL;
    argv[2] = PyObject_CallOneArg(decimal_type, qty);
    if (argv[2] == NULL) {
        Py_DECREF(argv[1]);
        return NULL;
    }
    if (side == NULL || side == Py_None || is_upper_ascii(side)) {
        argv[3] = side == NULL ? Py_None : side;
        Py_INCREF(argv[3]);
    }
    else {
        argv[3] = PyObject_CallMethodNoArgs(side, str_upper);
        if (argv[3] == NULL) {
            Py_DECREF(argv[1]);
            Py_DECREF(argv[2]);
            return NULL;
        }
    }
    argv[4] = trade_id;
    argv[5] = time;
    argv[6] = d;
    if (cls == (PyObject *)bound_cls) {
        /* what object.__new__ and attrs' __init__ do, without seven object.__setattr__
         * calls: allocate (zeroed, GC-tracked), then store each slot */
        int i;
        result = bound_cls->tp_alloc(bound_cls, 0);
        if (result != NULL) {
            for (i = 0; i < TRADE_FIELDS; i++) {
                if (i < 1 || i > 3) /* 1-3 are new references: handed over */
                    Py_INCREF(argv[i]);
                *(PyObject **)((char *)result + bound_offsets[i]) = argv[i];
            }
            return result;
        }
    }
    else
        result = PyObject_Vectorcall(cls, argv, TRADE_FIELDS, NULL);
    Py_DECREF(argv[1]);
    Py_DECREF(argv[2]);
    Py_DECREF(argv[3]);
    return result;
}

/* bind(cls, names): trades() may fill instances of cls directly when each of names is a
 * plain object slot of cls (a member descriptor in its own __dict__), cls's instances have
 * no __dict__ and it is made by object.__new__. models.py checks the attrs side (no
 * validators, converters or hooks); this checks the layout. TypeError, and nothing bound,
 * otherwise. */
static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyTypeObject *cls;
    PyObject *names, *dict;
    Py_ssize_t offsets[TRADE_FIELDS], i;
    (void)module;
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_CheckExact(args[1]) ||
        PyTuple_GET_SIZE(args[1]) != TRADE_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "bind(cls, names): a class and 7 slot names");
        return NULL;
    }
    cls = (PyTypeObject *)args[0];
    names = args[1];
    dict = cls->tp_dict;
    if (cls->tp_dictoffset != 0 || dict == NULL || cls->tp_new != PyBaseObject_Type.tp_new ||
        cls->tp_alloc != PyType_GenericAlloc) {
        PyErr_SetString(PyExc_TypeError, "bind: not a plain slotted class");
        return NULL;
    }
    for (i = 0; i < TRADE_FIELDS; i++) {
        PyObject *descr = PyDict_GetItemWithError(dict, PyTuple_GET_ITEM(names, i));
        PyMemberDef *member;
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "bind: a name is not a slot of the class");
            return NULL;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            PyErr_SetString(PyExc_TypeError, "bind: a slot is not a plain object slot");
            return NULL;
        }
        offsets[i] = member->offset;
    }
    memcpy(bound_offsets, offsets, sizeof(offsets));
    Py_INCREF(cls);
    Py_XSETREF(bound_cls, cls);
    Py_RETURN_NONE;
}

static PyObject *
trades(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cls, *data, *out, *item;
    Py_ssize_t i, n;
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "trades(cls, data) takes exactly 2 arguments");
        return NULL;
    }
    cls = args[0];
    data = args[1];
    if (PyDict_CheckExact(data)) {
        item = one_trade(cls, data);
        if (item == NULL || item == Py_None)
            return item;
        out = PyList_New(1);
        if (out == NULL) {
            Py_DECREF(item);
            return NULL;
        }
        PyList_SET_ITEM(out, 0, item); /* steals */
        return out;
    }
    if (!PyList_CheckExact(data))
        Py_RETURN_NONE;
    n = PyList_GET_SIZE(data);
    out = PyList_New(n);
    if (out == NULL)
        return NULL;
    /* cls(...) may run Python code (attrs' __init__): the list could change size under us;
     * then the pure code decides */
    for (i = 0; i < n; i++) {
        if (PyList_GET_SIZE(data) != n) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        item = PyList_GET_ITEM(data, i);
        Py_INCREF(item);
        {
            PyObject *trade = one_trade(cls, item);
            Py_DECREF(item);
            if (trade == NULL || trade == Py_None) {
                Py_DECREF(out);
                return trade;
            }
            PyList_SET_ITEM(out, i, trade); /* steals */
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(cls, names): let trades() fill cls's slots (names, in field order) directly."},
    {"opens", (PyCFunction)opens, METH_O,
     "opens(data) -> how many b'{' and b'[' the bytes hold (-1: not exact bytes)."},
    {"trades", (PyCFunction)(void (*)(void))trades, METH_FASTCALL,
     "trades(cls, data) -> list of cls instances, or None: see models.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sixmm.protocol._wirefast",
    "Fast paths of frames.decode and models._trades, in C (optional).", -1, methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *
intern(const char *s)
{
    return PyUnicode_InternFromString(s);
}

PyMODINIT_FUNC
PyInit__wirefast(void)
{
    PyObject *decimal;
    if (!(key_symbol = intern("symbol")) || !(key_price = intern("price")) ||
        !(key_quantity = intern("quantity")) || !(key_side = intern("side")) ||
        !(key_trade_id = intern("tradeId")) || !(key_time = intern("time")) ||
        !(str_upper = intern("upper")))
        return NULL;
    decimal = PyImport_ImportModule("decimal");
    if (decimal == NULL)
        return NULL;
    decimal_type = PyObject_GetAttrString(decimal, "Decimal");
    Py_DECREF(decimal);
    if (decimal_type == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
