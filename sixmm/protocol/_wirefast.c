/*
 * sixmm.protocol._wirefast -- the fast paths of reading a frame into models, in C.
 *
 * decode_push(text, loads, max_bytes, max_depth, Push) is frames.decode's common case: exact
 * bytes within max_bytes, with at most max_depth opening brackets (so never too deep), that
 * loads() parses into {"event": "data", "topic": a str not starting "user.", "data": not
 * null, "ts": an int, null or absent}: it returns Push(topic, ts, data, False, obj), what
 * decode returns for it. Parsed into anything else, it returns (obj,) and decode classifies
 * obj in Python; not parsed (too large, maybe too deep, loads raised an Exception), None and
 * decode runs from the start (a frame that loads rejects is parsed twice: rare and cheap).
 *
 * opens(data) is decode's nesting pre-count, data.count(b"{") + data.count(b"["), in one
 * pass over exact bytes (anything else: -1, and decode counts in Python), for the frames
 * decode_push leaves to the pure code.
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
 * text_frame(buf, pos, max_frame) is framing.FrameDecoder's common case: at buf[pos:] (buf a
 * bytearray) a whole final unmasked text frame (first byte 0x81: no RSV bits) with a 7-bit
 * or a minimal 16-bit length of at most max_frame, whose payload is all ASCII (so valid
 * UTF-8). It returns the payload as bytes; in every other case (a partial frame, another
 * opcode, a 64-bit length, a non-ASCII byte...) None, and the pure decoder, the reference,
 * takes the frame.
 *
 * bind(which, cls, names) lets trades() and decode_push() fill a Trade or a Push slot by
 * slot instead of calling the class (attrs' frozen __init__ calls object.__setattr__ once per
 * field: half of the C trade path); models.py and frames.py bind only classes whose
 * __init__ stores its arguments and nothing else.
 *
 * Module state (the interned keys, decimal.Decimal, the bound layouts) lives in static
 * variables: single-phase init, one interpreter, as in _bookside.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "structmember.h" /* T_OBJECT_EX, READONLY */

#include "_numeral.h"

static PyObject *key_symbol, *key_price, *key_quantity, *key_side, *key_trade_id, *key_time;
static PyObject *str_upper, *decimal_type;

/* bind(which, cls, names): a class whose instances are filled slot by slot (see layout_new),
 * and the byte offsets of its slots in the order of names. */
#define TRADE_FIELDS 7
#define PUSH_FIELDS 5
typedef struct {
    PyTypeObject *cls; /* NULL: not bound, call the class */
    Py_ssize_t n;
    Py_ssize_t offsets[TRADE_FIELDS];
} Layout;
static Layout trade_layout = {NULL, TRADE_FIELDS, {0}};
static Layout push_layout = {NULL, PUSH_FIELDS, {0}};

static PyObject *key_topic, *key_event, *key_data, *key_ts, *str_data, *str_user_prefix;

/* A new instance of a bound class with values[i] in slot i (new references taken): what
 * object.__new__ and an __init__ that only stores its arguments make, without one
 * object.__setattr__ per field. The allocation is zeroed and GC-tracked. */
static PyObject *
layout_new(Layout *layout, PyObject *const *values)
{
    PyTypeObject *cls = layout->cls;
    PyObject *obj = cls->tp_alloc(cls, 0);
    Py_ssize_t i;
    if (obj == NULL)
        return NULL;
    for (i = 0; i < layout->n; i++) {
        Py_INCREF(values[i]);
        *(PyObject **)((char *)obj + layout->offsets[i]) = values[i];
    }
    return obj;
}

/* An instance of cls from values: filled directly when cls is the layout's class, else
 * cls(*values). */
static PyObject *
make(Layout *layout, PyObject *cls, PyObject *const *values)
{
    if (cls == (PyObject *)layout->cls)
        return layout_new(layout, values);
    return PyObject_Vectorcall(cls, values, (size_t)layout->n, NULL);
}

/* -- opens ------------------------------------------------------------------------------ */

/* How many b'{' and b'[' the exact bytes hold. */
static Py_ssize_t
count_opens(PyObject *data)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t i, n = PyBytes_GET_SIZE(data), count = 0;
    for (i = 0; i < n; i++)
        count += (p[i] == '{') | (p[i] == '[');
    return count;
}

static PyObject *
opens(PyObject *module, PyObject *data)
{
    (void)module;
    if (!PyBytes_CheckExact(data))
        return PyLong_FromLong(-1);
    return PyLong_FromSsize_t(count_opens(data));
}

/* -- text_frame ------------------------------------------------------------------------ */

/* 1 when p[0:n] has no byte >= 0x80: eight bytes at a time, then the tail. */
static int
all_ascii(const unsigned char *p, Py_ssize_t n)
{
    uint64_t acc = 0, word;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, p + i, 8);
        acc |= word;
    }
    for (; i < n; i++)
        acc |= p[i];
    return (acc & UINT64_C(0x8080808080808080)) == 0;
}

static PyObject *
text_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *p;
    Py_ssize_t pos, max_frame, avail, n, start;
    (void)module;
    if (nargs != 3 || !PyByteArray_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "text_frame(buf, pos, max_frame): a bytearray, two ints");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    max_frame = PyLong_AsSsize_t(args[2]);
    if ((pos == -1 || max_frame == -1) && PyErr_Occurred())
        return NULL;
    avail = PyByteArray_GET_SIZE(args[0]) - pos;
    if (pos < 0 || avail < 2)
        Py_RETURN_NONE;
    p = (const unsigned char *)PyByteArray_AS_STRING(args[0]) + pos;
    if (p[0] != 0x81)
        Py_RETURN_NONE;
    n = p[1]; /* the mask bit set makes n >= 128: not taken here */
    if (n < 126)
        start = 2;
    else if (n == 126 && avail >= 4) {
        n = ((Py_ssize_t)p[2] << 8) | p[3];
        /* a non-minimal length (under 126 in the 16-bit form) goes to the pure path: the
         * caller finds the header's size from the payload's length */
        if (n < 126)
            Py_RETURN_NONE;
        start = 4;
    }
    else
        Py_RETURN_NONE;
    if (start + n > avail || n > max_frame || !all_ascii(p + start, n))
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)p + start, n);
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
    if (!is_ascii_str(s))
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
    result = make(&trade_layout, cls, argv);
    Py_DECREF(argv[1]);
    Py_DECREF(argv[2]);
    Py_DECREF(argv[3]);
    return result;
}

/* bind(which, cls, names): trades() ("trade") or decode_push() ("push") may fill instances
 * of cls directly when each of names is a plain object slot of cls (a member descriptor in
 * its own __dict__), cls's instances have no __dict__ and it is made by object.__new__. The
 * caller checks the other side (no validators, converters or hooks: the __init__ only
 * stores its arguments, in the order of names); this checks the layout. TypeError, and
 * nothing bound, otherwise. */
static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyTypeObject *cls;
    PyObject *names, *dict;
    Layout *layout;
    Py_ssize_t offsets[TRADE_FIELDS], i;
    (void)module;
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyTuple_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "bind(which, cls, names): a kind, a class, slot names");
        return NULL;
    }
    if (PyUnicode_CompareWithASCIIString(args[0], "trade") == 0)
        layout = &trade_layout;
    else if (PyUnicode_CompareWithASCIIString(args[0], "push") == 0)
        layout = &push_layout;
    else {
        PyErr_SetString(PyExc_TypeError, "bind: which is 'trade' or 'push'");
        return NULL;
    }
    cls = (PyTypeObject *)args[1];
    names = args[2];
    if (PyTuple_GET_SIZE(names) != layout->n) {
        PyErr_Format(PyExc_TypeError, "bind: %zd slot names expected", layout->n);
        return NULL;
    }
    dict = cls->tp_dict;
    if (cls->tp_dictoffset != 0 || dict == NULL || cls->tp_new != PyBaseObject_Type.tp_new ||
        cls->tp_alloc != PyType_GenericAlloc) {
        PyErr_SetString(PyExc_TypeError, "bind: not a plain slotted class");
        return NULL;
    }
    for (i = 0; i < layout->n; i++) {
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
    memcpy(layout->offsets, offsets, sizeof(offsets[0]) * (size_t)layout->n);
    Py_INCREF(cls);
    Py_XSETREF(layout->cls, cls);
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

/* -- decode_push ------------------------------------------------------------------------ */

/* (obj,): parsed, for the pure code's classification; steals obj. */
static PyObject *
parsed(PyObject *obj)
{
    PyObject *one = PyTuple_Pack(1, obj);
    Py_DECREF(obj);
    return one;
}

static PyObject *
decode_push(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *text, *loads, *obj, *topic, *event, *data, *ts, *values[PUSH_FIELDS];
    Py_ssize_t max_bytes, max_depth;
    int user;
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "decode_push(text, loads, max_bytes, max_depth, cls): 5 arguments");
        return NULL;
    }
    text = args[0];
    loads = args[1];
    max_bytes = PyLong_AsSsize_t(args[2]);
    max_depth = PyLong_AsSsize_t(args[3]);
    if ((max_bytes == -1 || max_depth == -1) && PyErr_Occurred())
        return NULL;
    if (!PyBytes_CheckExact(text))
        Py_RETURN_NONE;
    if (PyBytes_GET_SIZE(text) > max_bytes)
        Py_RETURN_NONE;
    if (count_opens(text) > max_depth) /* maybe too deep: the pure code walks the object */
        Py_RETURN_NONE;
    obj = PyObject_CallOneArg(loads, text);
    if (obj == NULL) {
        /* not JSON (or a decoder bug): the pure code parses it again and says what it is */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!PyDict_CheckExact(obj))
        return parsed(obj);
    /* the common case of decode(): {"event": "data", "topic": not "user.*", "data": not
     * null, "ts": an int or absent/null}; anything else is the pure code's to classify */
    event = PyDict_GetItemWithError(obj, key_event);
    topic = event == NULL ? NULL : PyDict_GetItemWithError(obj, key_topic);
    data = topic == NULL ? NULL : PyDict_GetItemWithError(obj, key_data);
    if (data == NULL) {
        PyErr_Clear();
        return parsed(obj);
    }
    if (!PyUnicode_CheckExact(event) || PyUnicode_Compare(event, str_data) != 0 ||
        !PyUnicode_CheckExact(topic) || data == Py_None) {
        PyErr_Clear();
        return parsed(obj);
    }
    user = (int)PyUnicode_Tailmatch(topic, str_user_prefix, 0, PY_SSIZE_T_MAX, -1);
    if (user != 0) {
        PyErr_Clear();
        return parsed(obj);
    }
    ts = PyDict_GetItemWithError(obj, key_ts);
    if (ts == NULL) {
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return parsed(obj);
        }
        ts = Py_None;
    }
    else if (ts != Py_None && !PyLong_CheckExact(ts))
        return parsed(obj);
    values[0] = topic;
    values[1] = ts;
    values[2] = data;
    values[3] = Py_False;
    values[4] = obj;
    {
        PyObject *push = make(&push_layout, args[4], values);
        Py_DECREF(obj);
        return push;
    }
}

static PyMethodDef methods[] = {
    {"decode_push", (PyCFunction)(void (*)(void))decode_push, METH_FASTCALL,
     "decode_push(text, loads, max_bytes, max_depth, cls) -> a cls (Push), (obj,) or None: "
     "see frames.decode."},
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(which, cls, names): let trades() ('trade') or decode_push() ('push') fill cls's "
     "slots (names, in the order of the values) directly."},
    {"text_frame", (PyCFunction)(void (*)(void))text_frame, METH_FASTCALL,
     "text_frame(buf, pos, max_frame) -> the payload of a whole final unmasked ASCII text "
     "frame at buf[pos:], or None: see framing.FrameDecoder."},
    {"opens", (PyCFunction)opens, METH_O,
     "opens(data) -> how many b'{' and b'[' the bytes hold (-1: not exact bytes)."},
    {"trades", (PyCFunction)(void (*)(void))trades, METH_FASTCALL,
     "trades(cls, data) -> list of cls instances, or None: see models.py."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sixmm.protocol._wirefast",
    "Fast paths of framing, frames.decode and models._trades, in C (optional).", -1, methods,
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
        !(str_upper = intern("upper")) || !(key_topic = intern("topic")) ||
        !(key_event = intern("event")) || !(key_data = intern("data")) ||
        !(key_ts = intern("ts")) || !(str_data = intern("data")) ||
        !(str_user_prefix = intern("user.")))
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
