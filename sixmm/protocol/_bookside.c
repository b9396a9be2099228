/*
 * sixmm.protocol._bookside -- the hot path of one order-book side, in C.
 *
 * Why: the pure-Python _BookSide.update / _BookSide.best in sixmm/protocol/book.py spend most
 * of their time in bytecode dispatch (a loop over ~20 level changes per depth frame, a loop
 * over 10 levels per top(10) read). These two functions do the same work on the SAME Python
 * objects, so the pure code stays the reference and both can be mixed freely on one book.
 * Optional: book.py falls back to the pure code when this module is missing or when
 * SIXMM_NO_EXTENSIONS=1 is set at import time.
 *
 * The layout it mirrors (see book.py's module docstring), per side (a _BookSide):
 *   side.by_str : dict  price string (as last received) -> entry
 *   side.by_key : dict  ordering key -> the same entry
 *   side.keys   : list  the keys, sorted ascending, best level LAST
 *   side.neg    : bool  asks: key = -price (so the lowest ask sorts last)
 *   side._book  : the BookState; its _exact is True while keys are Decimals, not floats
 *   side._fast  : tuple (_book, by_str, by_key, keys, neg), the same objects in one attribute
 *                 read (five attribute reads cost more than the rest of a short update);
 *                 book.py never rebinds them (by_str, by_key and keys change in place only)
 *   entry       : list  [price str, qty str, (Decimal, Decimal) or None, key, Decimal or None]
 *
 * update(side, levels) handles, per level:
 *   - a known price string: a new quantity (two list stores) or a deletion (two dict
 *     deletions and one list deletion at the bisect position);
 *   - a new price string of at most 15 characters in float-key mode, whose value is not in
 *     the book: a new entry, inserted into keys (bisect on the doubles directly), or, for a
 *     zero quantity, nothing (exchanges delete levels a client may not have);
 * Everything else calls back into the Python methods, so semantics are identical by
 * construction: side._set(price, qty, True) and side._remove_other_spelling(price) for
 * another spelling of a present level, in exact-key mode, or for a price string longer than
 * 15 characters; and side.update((level,)), the pure code itself, for any level that is not
 * a tuple/list of two exact str (the pure code raises what it raises).
 * Operations happen in the same order as in the pure code, so an exception (propagated as
 * is) leaves the side exactly as the pure code would have left it.
 *
 * apply(state, msg) is BookState.apply with its common case (an update that continues a synced
 * book) in C and everything else handed to the pure method; see bookside_apply.
 *
 * best(side, n) returns the n best levels as (Decimal, Decimal) pairs, building and caching
 * them in the entries exactly like the pure code (n < 0 or a non-int n: the pure code).
 *
 * Module state (interned names, decimal.Decimal, bisect.bisect_left/insort) lives in static
 * variables: single-phase init, one interpreter.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX, for the slot offsets apply() reads */

/* entry slots, as in book.py */
enum { E_PRICE = 0, E_QTY = 1, E_PAIR = 2, E_KEY = 3, E_PRICE_DEC = 4, E_SIZE = 5 };

/* A price string this long has at most 15 significant digits: a float key identifies it. */
#define SHORT_PRICE 15

static PyObject *str_fast, *str_exact;
static PyObject *str_set, *str_remove_other, *str_update, *str_best;
static PyObject *str_load, *str_load_levels, *str_loaded;
static PyObject *decimal_type, *bisect_left_fn, *insort_fn;

/* -- small helpers --------------------------------------------------------------------- */

/* list[i] = value for an exact list and a valid index; the old item is released last. */
static void
list_store(PyObject *list, Py_ssize_t i, PyObject *value)
{
    PyObject *old = PyList_GET_ITEM(list, i);
    Py_INCREF(value);
    PyList_SET_ITEM(list, i, value);
    Py_XDECREF(old);
}

/* An entry as book.py makes them: an exact list of 5 items. */
static int
is_entry(PyObject *entry)
{
    return PyList_CheckExact(entry) && PyList_GET_SIZE(entry) == E_SIZE;
}

/* 1 if qty.strip("0.") would be non-empty: some character is neither '0' nor '.'. */
static int
qty_nonzero(PyObject *qty)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(qty) < 0)
        return -1;
#endif
    Py_ssize_t n = PyUnicode_GET_LENGTH(qty);
    int kind = PyUnicode_KIND(qty);
    const void *data = PyUnicode_DATA(qty);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c != '0' && c != '.')
            return 1;
    }
    return 0;
}

/* side.<name>(args...) with the result discarded: 0, or -1 with the exception set. */
static int
call_method(PyObject *side, PyObject *name, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *r = PyObject_CallMethodObjArgs(side, name, a, b, c, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* -- bisect on a list of floats -------------------------------------------------------- */
/* Same probe sequence as CPython's _bisect (mid = (lo + hi) / 2) and the same comparisons
 * (float < float is a plain C double comparison), so the same index on any list. -2 when an
 * item is not an exact float: the caller then uses the bisect module. */

static Py_ssize_t
float_bisect_left(PyObject *list, double x)
{
    PyObject **items = ((PyListObject *)list)->ob_item;
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = (Py_ssize_t)(((size_t)lo + (size_t)hi) / 2);
        PyObject *item = items[mid];
        if (!PyFloat_CheckExact(item))
            return -2;
        if (PyFloat_AS_DOUBLE(item) < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static Py_ssize_t
float_bisect_right(PyObject *list, double x)
{
    PyObject **items = ((PyListObject *)list)->ob_item;
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(list);
    while (lo < hi) {
        Py_ssize_t mid = (Py_ssize_t)(((size_t)lo + (size_t)hi) / 2);
        PyObject *item = items[mid];
        if (!PyFloat_CheckExact(item))
            return -2;
        if (x < PyFloat_AS_DOUBLE(item))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* bisect_left(keys, key): the index, or -1 with an exception set. */
static Py_ssize_t
keys_bisect_left(PyObject *keys, PyObject *key)
{
    if (PyFloat_CheckExact(key)) {
        Py_ssize_t i = float_bisect_left(keys, PyFloat_AS_DOUBLE(key));
        if (i >= 0)
            return i;
    }
    PyObject *r = PyObject_CallFunctionObjArgs(bisect_left_fn, keys, key, NULL);
    if (r == NULL)
        return -1;
    Py_ssize_t i = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return i;
}

/* list.insert(i, item) and del list[i] with one memmove of the tail each. PyList_Insert
 * moves the items one by one, and PyList_SetSlice goes through the general slice code: on a
 * 5,000-level side these two were a fifth of a depth update's instructions. The list ends
 * in the same state (only a deletion keeps its allocation, as a later insert will use it). */
static int
list_insert_at(PyObject *list, Py_ssize_t i, PyObject *item)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    PyObject **items;
    if (PyList_Append(list, item) < 0) /* grows the list; item is now at n */
        return -1;
    items = ((PyListObject *)list)->ob_item;
    if (i < n) {
        memmove(&items[i + 1], &items[i], (size_t)(n - i) * sizeof(PyObject *));
        items[i] = item; /* the reference Append took */
    }
    return 0;
}

static void
list_delete_at(PyObject *list, Py_ssize_t i)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    PyObject **items = ((PyListObject *)list)->ob_item;
    PyObject *old = items[i];
    memmove(&items[i], &items[i + 1], (size_t)(n - i - 1) * sizeof(PyObject *));
    Py_SET_SIZE(list, n - 1);
    Py_DECREF(old); /* last: a __del__ of it sees a consistent list */
}

/* insort(keys, key): 0, or -1 with an exception set. */
static int
keys_insort(PyObject *keys, PyObject *key)
{
    if (PyFloat_CheckExact(key)) {
        Py_ssize_t i = float_bisect_right(keys, PyFloat_AS_DOUBLE(key));
        if (i >= 0)
            return list_insert_at(keys, i, key);
    }
    PyObject *r = PyObject_CallFunctionObjArgs(insort_fn, keys, key, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* -- one side, as update() sees it ------------------------------------------------------ */

typedef struct {
    PyObject *side;   /* borrowed (the caller's argument) */
    PyObject *fast;   /* side._fast: a strong reference, which keeps the rest alive */
    PyObject *book;
    PyObject *by_str;
    PyObject *by_key;
    PyObject *keys;
    int neg;
} Side;

static void
side_close(Side *s)
{
    Py_CLEAR(s->fast);
}

/* Take side._fast (a new reference, stolen): 0, or 1 if it is not the layout this module
 * knows (then only the pure code knows what to do). */
static int
side_open_with(Side *s, PyObject *side, PyObject *fast)
{
    s->side = side;
    s->fast = fast;
    if (!PyTuple_CheckExact(fast) || PyTuple_GET_SIZE(fast) != 5)
        goto other;
    s->book = PyTuple_GET_ITEM(fast, 0);
    s->by_str = PyTuple_GET_ITEM(fast, 1);
    s->by_key = PyTuple_GET_ITEM(fast, 2);
    s->keys = PyTuple_GET_ITEM(fast, 3);
    s->neg = PyTuple_GET_ITEM(fast, 4) == Py_True;
    if (!PyDict_CheckExact(s->by_str) || !PyDict_CheckExact(s->by_key) ||
        !PyList_CheckExact(s->keys) || !PyBool_Check(PyTuple_GET_ITEM(fast, 4)))
        goto other;
    return 0;
other:
    side_close(s);
    return 1;
}

/* Read side._fast: 0, 1 if it is not the layout this module knows, or -1 with an exception
 * set. */
static int
side_open(Side *s, PyObject *side)
{
    PyObject *fast = PyObject_GetAttr(side, str_fast);
    if (fast == NULL)
        return -1;
    return side_open_with(s, side, fast);
}

/* A known price string with a non-zero quantity: entry[1] = qty; entry[2] = None. */
static void
set_quantity(PyObject *entry, PyObject *qty)
{
    list_store(entry, E_QTY, qty);
    list_store(entry, E_PAIR, Py_None);
}

/* A known price string with quantity 0: del by_str[price]; del by_key[key]; del keys[i]. */
static int
remove_known(Side *s, PyObject *price, PyObject *entry)
{
    int rc = -1;
    PyObject *key = NULL;
    Py_INCREF(entry);
    if (PyDict_DelItem(s->by_str, price) < 0)
        goto done;
    key = PyList_GET_ITEM(entry, E_KEY);
    Py_INCREF(key);
    if (PyDict_DelItem(s->by_key, key) < 0)
        goto done;
    Py_ssize_t i = keys_bisect_left(s->keys, key);
    if (i < 0)
        goto done;
    if (i >= PyList_GET_SIZE(s->keys)) {
        PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
        goto done;
    }
    list_delete_at(s->keys, i);
    rc = 0;
done:
    Py_XDECREF(key);
    Py_DECREF(entry);
    return rc;
}

/* float(price), negated for asks: a new reference, or NULL with an exception. */
static PyObject *
float_key(Side *s, PyObject *price)
{
    PyObject *key = PyFloat_FromString(price);
    if (key == NULL || !s->neg)
        return key;
    PyObject *negated = PyFloat_FromDouble(-PyFloat_AS_DOUBLE(key));
    Py_DECREF(key);
    return negated;
}

/* by_str[price] = by_key[key] = [price, qty, None, key, None]; insort(keys, key). */
static int
insert_new(Side *s, PyObject *price, PyObject *qty, PyObject *key)
{
    int rc = -1;
    PyObject *entry = PyList_New(E_SIZE);
    if (entry == NULL)
        return -1;
    Py_INCREF(price);
    PyList_SET_ITEM(entry, E_PRICE, price);
    Py_INCREF(qty);
    PyList_SET_ITEM(entry, E_QTY, qty);
    Py_INCREF(Py_None);
    PyList_SET_ITEM(entry, E_PAIR, Py_None);
    Py_INCREF(key);
    PyList_SET_ITEM(entry, E_KEY, key);
    Py_INCREF(Py_None);
    PyList_SET_ITEM(entry, E_PRICE_DEC, Py_None);
    /* exact str, None and a float: nothing the entry holds can lead back to it, so the cyclic
     * GC need not track it (see untrack() below) */
    PyObject_GC_UnTrack(entry);
    /* A dict that untrack() left untracked (all its values untracked entries) stays so: the
     * new value is one more such entry (the dict re-tracks itself on any list insert). */
    int str_tracked = PyObject_GC_IsTracked(s->by_str);
    int key_tracked = PyObject_GC_IsTracked(s->by_key);
    if (PyDict_SetItem(s->by_str, price, entry) == 0 &&
        PyDict_SetItem(s->by_key, key, entry) == 0)
        rc = keys_insort(s->keys, key);
    if (!str_tracked && PyDict_CheckExact(s->by_str) && PyObject_GC_IsTracked(s->by_str))
        PyObject_GC_UnTrack(s->by_str);
    if (!key_tracked && PyDict_CheckExact(s->by_key) && PyObject_GC_IsTracked(s->by_key))
        PyObject_GC_UnTrack(s->by_key);
    Py_DECREF(entry);
    return rc;
}

/* book._exact as 0/1, or -1 with an exception set. */
static int
book_exact(Side *s)
{
    PyObject *exact = PyObject_GetAttr(s->book, str_exact);
    if (exact == NULL)
        return -1;
    int truth = PyObject_IsTrue(exact);
    Py_DECREF(exact);
    return truth;
}

/* What the pure code does with a price string not in by_str: _set(price, qty, True) for a
 * quantity, _remove_other_spelling(price) for a zero. */
static int
call_back(Side *s, PyObject *price, PyObject *qty, int nonzero)
{
    if (nonzero)
        return call_method(s->side, str_set, price, qty, Py_True);
    return call_method(s->side, str_remove_other, price, NULL, NULL);
}

/* A price string not in by_str (exact str price and qty). In float-key mode with a short
 * price, the key decides: no level with that value means a new level, or (for a zero)
 * nothing to do, which is what _remove_other_spelling would find; a level with that value
 * is another spelling of it, for the Python methods. */
static int
update_unknown(Side *s, PyObject *price, PyObject *qty)
{
    int nonzero = qty_nonzero(qty);
    if (nonzero < 0)
        return -1;
    int exact = book_exact(s);
    if (exact < 0)
        return -1;
    if (exact || PyUnicode_GET_LENGTH(price) > SHORT_PRICE)
        return call_back(s, price, qty, nonzero);
    PyObject *key = float_key(s, price);
    if (key == NULL)
        return -1;
    int present = PyDict_Contains(s->by_key, key);
    int rc;
    if (present < 0)
        rc = -1;
    else if (present)
        rc = call_back(s, price, qty, nonzero);
    else
        rc = nonzero ? insert_new(s, price, qty, key) : 0;
    Py_DECREF(key);
    return rc;
}

/* One level that is not (str, str): the pure update() on it alone. */
static int
update_pure(Side *s, PyObject *level)
{
    PyObject *one = PyTuple_Pack(1, level);
    if (one == NULL)
        return -1;
    int rc = call_method(s->side, str_update, one, NULL, NULL);
    Py_DECREF(one);
    return rc;
}

/* One level change with exact str price and qty: 0, or -1 with an exception set. */
static int
update_strings(Side *s, PyObject *level, PyObject *price, PyObject *qty)
{
    PyObject *entry = PyDict_GetItemWithError(s->by_str, price);
    if (entry == NULL)
        return PyErr_Occurred() ? -1 : update_unknown(s, price, qty);
    if (!is_entry(entry))
        return update_pure(s, level);
    int nonzero = qty_nonzero(qty);
    if (nonzero < 0)
        return -1;
    if (nonzero) {
        Py_INCREF(entry);
        set_quantity(entry, qty);
        Py_DECREF(entry);
        return 0;
    }
    return remove_known(s, price, entry);
}

/* One level change: 0, or -1 with an exception set. */
static int
update_level(Side *s, PyObject *level)
{
    PyObject *price, *qty;
    if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) == 2) {
        price = PyTuple_GET_ITEM(level, 0);
        qty = PyTuple_GET_ITEM(level, 1);
    } else if (PyList_CheckExact(level) && PyList_GET_SIZE(level) == 2) {
        price = PyList_GET_ITEM(level, 0);
        qty = PyList_GET_ITEM(level, 1);
    } else {
        return update_pure(s, level);
    }
    if (!PyUnicode_CheckExact(price) || !PyUnicode_CheckExact(qty))
        return update_pure(s, level);
    /* own them: a list level could change under a callback */
    Py_INCREF(price);
    Py_INCREF(qty);
    int rc = update_strings(s, level, price, qty);
    Py_DECREF(price);
    Py_DECREF(qty);
    return rc;
}

/* -- prefetch ------------------------------------------------------------------------------
 * At 5,000 levels per side the update is memory-bound: most of its time is the first touch of
 * a level's entry list, its item array and the old quantity string (released by the new one),
 * one cache miss after another. Before the real loop, these passes only READ: they look the
 * frame's prices up and ask the CPU to fetch those three objects for every level at once, so
 * the misses overlap instead of queueing. No state changes, no reference changes, no Python
 * code runs (exact str prices in an exact dict of exact str keys), no exception can escape:
 * the real loop below is unchanged and does everything as before. */
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((const void *)(p), 1, 3)
#define HAVE_PREFETCH 1
#else
#define PREFETCH(p) ((void)(p))
#define HAVE_PREFETCH 0
#endif
#define PREFETCH_MAX 64

static void
prefetch_levels(Side *s, PyObject *levels)
{
#if HAVE_PREFETCH
    PyObject *entries[PREFETCH_MAX];
    Py_ssize_t n = PyList_GET_SIZE(levels), k = 0, i;
    if (n > PREFETCH_MAX || !PyDict_CheckExact(s->by_str))
        return; /* a snapshot-sized list: the plain loop */
    for (i = 0; i < n; i++) {
        PyObject *level = PyList_GET_ITEM(levels, i), *price, *entry;
        if (!PyTuple_CheckExact(level) || PyTuple_GET_SIZE(level) != 2)
            continue;
        price = PyTuple_GET_ITEM(level, 0);
        if (!PyUnicode_CheckExact(price))
            continue;
        entry = PyDict_GetItemWithError(s->by_str, price); /* borrowed; hash is cached */
        if (entry == NULL) {
            if (PyErr_Occurred())
                PyErr_Clear(); /* cannot happen for str keys; the real loop reports it */
            continue;
        }
        PREFETCH(entry);
        entries[k++] = entry;
    }
    for (i = 0; i < k; i++) {
        if (PyList_CheckExact(entries[i]))
            PREFETCH(((PyListObject *)entries[i])->ob_item);
        else
            entries[i] = NULL;
    }
    for (i = 0; i < k; i++) {
        PyObject *entry = entries[i];
        if (entry != NULL && PyList_GET_SIZE(entry) == E_SIZE) {
            PREFETCH(PyList_GET_ITEM(entry, E_QTY));
            PREFETCH(PyList_GET_ITEM(entry, E_KEY));
        }
    }
#else
    (void)s;
    (void)levels;
#endif
}

PyDoc_STRVAR(update_doc,
"update(side, levels)\n--\n\n"
"_BookSide.update(side, levels), with the common cases in C (see book.py).");

/* update(side, levels) for one side (fast: side._fast if the caller has it, borrowed, or
 * NULL): None, or NULL with an exception set. */
static PyObject *
side_update(PyObject *side, PyObject *fast, PyObject *levels)
{
    Side s;
    PyObject *it, *level;
    int rc;
    if (fast != NULL) {
        Py_INCREF(fast);
        rc = side_open_with(&s, side, fast);
    } else {
        rc = side_open(&s, side);
    }
    if (rc != 0)
        return rc < 0 ? NULL : PyObject_CallMethodObjArgs(side, str_update, levels, NULL);
    if (PyList_CheckExact(levels)) {
        prefetch_levels(&s, levels);
        /* what a list iterator does, without allocating one: the size is read every time */
        for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(levels); i++) {
            level = PyList_GET_ITEM(levels, i);
            Py_INCREF(level);
            rc = update_level(&s, level);
            Py_DECREF(level);
        }
    } else if ((it = PyObject_GetIter(levels)) != NULL) {
        while (rc == 0 && (level = PyIter_Next(it)) != NULL) {
            rc = update_level(&s, level);
            Py_DECREF(level);
        }
        Py_DECREF(it);
    }
    side_close(&s);
    if (rc < 0 || PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
bookside_update(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "update() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    return side_update(args[0], NULL, args[1]);
}

/* -- apply(state, msg): BookState.apply's common case ---------------------------------------
 * An update of a synced book that continues it (startVersion == version + 1, or <= version + 1
 * for the first update after a snapshot, endVersion > version), every field the exact type
 * parse_depth makes: both sides updated by side_update, then version, _first and applied set
 * and the crossed check made, in the pure code's order. Anything else (a snapshot, an unsynced
 * book, a stale update, a gap, an update without startVersion, a pure-Python book, a subclass,
 * versions beyond 63 bits) is BookState.apply itself, before anything is touched. The slots
 * of BookState and DepthMsg are read at their offsets (bind() resolves them once): the
 * attribute protocol would cost what this saves. */

enum {
    S_SYNCED, S_VERSION, S_FIRST, S_ARMED, S_UPDATE, S_BIDS, S_ASKS, S_APPLIED, S_CROSSED,
    S_COUNT
};
static const char *state_slots[S_COUNT] = {
    "synced", "version", "_first", "_armed", "_update", "_bids", "_asks", "applied", "crossed",
};
enum { M_KIND, M_START, M_END, M_BIDS, M_ASKS, M_COUNT };
static const char *msg_slots[M_COUNT] = {"kind", "start", "end", "bids", "asks"};

static PyTypeObject *state_type, *msg_type, *side_type;
static Py_ssize_t state_off[S_COUNT], msg_off[M_COUNT], side_fast_off;
static PyObject *apply_py, *outcome_applied, *outcome_crossed, *str_update_kind;
static PyObject *str_invalidate, *one;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* The offset of slot ``name`` of ``type``: 0, or -1 with an exception set. */
static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    if (d == NULL)
        return -1;
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
    if (ok)
        *off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(bind_doc,
"bind(BookState, DepthMsg, _BookSide, BookState.apply, Outcome.APPLIED, Outcome.CROSSED)\n--\n\n"
"Tell apply() the classes it serves (book.py calls it once).");

static PyObject *
bookside_bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
        !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "bind(state_type, msg_type, side_type, apply, applied, crossed)");
        return NULL;
    }
    Py_ssize_t soff[S_COUNT], moff[M_COUNT], foff;
    for (int i = 0; i < S_COUNT; i++)
        if (slot_offset((PyTypeObject *)args[0], state_slots[i], &soff[i]) < 0)
            return NULL;
    for (int i = 0; i < M_COUNT; i++)
        if (slot_offset((PyTypeObject *)args[1], msg_slots[i], &moff[i]) < 0)
            return NULL;
    if (slot_offset((PyTypeObject *)args[2], "_fast", &foff) < 0)
        return NULL;
    memcpy(state_off, soff, sizeof soff);
    memcpy(msg_off, moff, sizeof moff);
    side_fast_off = foff;
    PyObject **targets[6] = {
        (PyObject **)&state_type, (PyObject **)&msg_type, (PyObject **)&side_type,
        &apply_py, &outcome_applied, &outcome_crossed,
    };
    for (int i = 0; i < 6; i++) {
        Py_INCREF(args[i]);
        Py_XSETREF(*targets[i], args[i]);
    }
    Py_RETURN_NONE;
}

/* 1 if v is an exact int in [0, 2**63), stored in *out; else 0 (no exception). */
static int
small_version(PyObject *v, long long *out)
{
    if (v == NULL || !PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0 || x == LLONG_MAX) {
        PyErr_Clear();
        return 0;
    }
    *out = x;
    return 1;
}

/* 1 if the book is crossed (best bid key >= -(best ask key)), 0 if not, -1 on error; bf and
 * af are the sides' _fast tuples (already checked by side_update's side_open_with). */
static int
is_crossed(PyObject *bf, PyObject *af)
{
    PyObject *bk = PyTuple_GET_ITEM(bf, 3), *ak = PyTuple_GET_ITEM(af, 3);
    if (!PyList_GET_SIZE(bk) || !PyList_GET_SIZE(ak))
        return 0;
    PyObject *b = PyList_GET_ITEM(bk, PyList_GET_SIZE(bk) - 1);
    PyObject *a = PyList_GET_ITEM(ak, PyList_GET_SIZE(ak) - 1);
    if (PyFloat_CheckExact(b) && PyFloat_CheckExact(a))
        return PyFloat_AS_DOUBLE(b) >= -PyFloat_AS_DOUBLE(a);
    Py_INCREF(b);
    Py_INCREF(a);
    PyObject *na = PyNumber_Negative(a);
    int rc = na == NULL ? -1 : PyObject_RichCompareBool(b, na, Py_GE);
    Py_XDECREF(na);
    Py_DECREF(a);
    Py_DECREF(b);
    return rc;
}

/* The _fast tuple of a side, borrowed, if it has the layout apply() knows; else NULL. */
static PyObject *
fast_of(PyObject *side)
{
    if (side == NULL || Py_TYPE(side) != side_type)
        return NULL;
    PyObject *fast = SLOT(side, side_fast_off);
    if (fast == NULL || !PyTuple_CheckExact(fast) || PyTuple_GET_SIZE(fast) != 5 ||
        !PyList_CheckExact(PyTuple_GET_ITEM(fast, 3)))
        return NULL;
    return fast;
}

/* state.<slot> = value (a new reference, stolen). */
static void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

/* state.<slot> + 1 (a new reference), re-read after the updates (Python code may have run):
 * NULL with an exception set if the slot is gone or the addition fails. */
static PyObject *
counter_plus_one(PyObject *state, int slot)
{
    PyObject *value = SLOT(state, state_off[slot]);
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute '%s'",
                     Py_TYPE(state)->tp_name, state_slots[slot]);
        return NULL;
    }
    return PyNumber_Add(value, one);
}

PyDoc_STRVAR(apply_doc,
"apply(state, msg)\n--\n\n"
"BookState.apply(state, msg), with the common update in C (see book.py).");

static PyObject *
bookside_apply(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "apply() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *state = args[0], *msg = args[1];
    if (apply_py == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_bookside.bind() was not called");
        return NULL;
    }
    if (Py_TYPE(state) != state_type || Py_TYPE(msg) != msg_type)
        goto pure;
    PyObject *kind = SLOT(msg, msg_off[M_KIND]);
    PyObject *armed = SLOT(state, state_off[S_ARMED]);
    if (kind == NULL || armed == NULL)
        goto pure;
    if (kind == Py_None) {
        if (armed != Py_False)
            goto pure; /* the awaited snapshot */
    } else if (kind != str_update_kind &&
               !(PyUnicode_CheckExact(kind) &&
                 PyUnicode_Compare(kind, str_update_kind) == 0)) {
        goto pure; /* a snapshot (or an error from the comparison) */
    }
    if (SLOT(state, state_off[S_SYNCED]) != Py_True)
        goto pure;
    PyObject *update = SLOT(state, state_off[S_UPDATE]);
    if (update == NULL || !PyCFunction_Check(update) ||
        PyCFunction_GET_FUNCTION(update) != (PyCFunction)(void (*)(void))bookside_update)
        goto pure; /* a pure-Python book */
    long long v, start, end;
    if (!small_version(SLOT(state, state_off[S_VERSION]), &v) ||
        !small_version(SLOT(msg, msg_off[M_END]), &end) ||
        !small_version(SLOT(msg, msg_off[M_START]), &start))
        goto pure;
    if (end <= v)
        goto pure; /* stale */
    PyObject *first = SLOT(state, state_off[S_FIRST]);
    if (first == Py_True ? !(start <= v + 1) : (first != Py_False || start != v + 1))
        goto pure; /* a gap (or a state this code does not know) */
    PyObject *bids = SLOT(state, state_off[S_BIDS]), *asks = SLOT(state, state_off[S_ASKS]);
    PyObject *mbids = SLOT(msg, msg_off[M_BIDS]), *masks = SLOT(msg, msg_off[M_ASKS]);
    PyObject *applied = SLOT(state, state_off[S_APPLIED]);
    PyObject *bf = fast_of(bids), *af = fast_of(asks);
    if (bf == NULL || af == NULL || mbids == NULL || masks == NULL || applied == NULL ||
        !PyList_CheckExact(mbids) || !PyList_CheckExact(masks) || !PyLong_CheckExact(applied))
        goto pure;
    /* held: a callback into Python from an unusual level may run any code (the version set
     * is the endVersion read here, as the pure code reads it before the updates) */
    PyObject *end_obj = SLOT(msg, msg_off[M_END]);
    Py_INCREF(end_obj);
    Py_INCREF(bids);
    Py_INCREF(asks);
    Py_INCREF(bf);
    Py_INCREF(af);
    Py_INCREF(mbids);
    Py_INCREF(masks);
    PyObject *result = NULL;
    PyObject *r;
    if (PyList_GET_SIZE(mbids)) {
        if ((r = side_update(bids, bf, mbids)) == NULL)
            goto done;
        Py_DECREF(r);
    }
    if (PyList_GET_SIZE(masks)) {
        if ((r = side_update(asks, af, masks)) == NULL)
            goto done;
        Py_DECREF(r);
    }
    PyObject *next = counter_plus_one(state, S_APPLIED);
    if (next == NULL)
        goto done;
    Py_INCREF(end_obj);
    slot_set(state, state_off[S_VERSION], end_obj);
    Py_INCREF(Py_False);
    slot_set(state, state_off[S_FIRST], Py_False);
    slot_set(state, state_off[S_APPLIED], next);
    int crossed = is_crossed(bf, af);
    if (crossed < 0)
        goto done;
    if (crossed) {
        PyObject *c1 = counter_plus_one(state, S_CROSSED);
        if (c1 == NULL)
            goto done;
        slot_set(state, state_off[S_CROSSED], c1);
        r = PyObject_CallMethodNoArgs(state, str_invalidate);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
        result = outcome_crossed;
    } else {
        result = outcome_applied;
    }
    Py_INCREF(result);
done:
    Py_DECREF(end_obj);
    Py_DECREF(masks);
    Py_DECREF(mbids);
    Py_DECREF(af);
    Py_DECREF(bf);
    Py_DECREF(asks);
    Py_DECREF(bids);
    return result;
pure:
    return PyObject_CallFunctionObjArgs(apply_py, state, msg, NULL);
}

/* -- load(levels): a snapshot ------------------------------------------------------------
 * _BookSide.load(side, levels) with its common case in C: clear the side, then per level a new
 * price string of at most 15 characters with a non-zero quantity whose float key is not in the
 * side yet (every level of an ordinary snapshot) becomes an entry created UNTRACKED by the
 * cyclic GC and goes into by_key, then by_str, as _set(price, qty, False) would put it. Any
 * other level (a zero quantity, a repeated price string, another spelling of a level already
 * loaded, a long price, exact-key mode, a level that is not two exact str) goes to the pure
 * side._load_levels((level,)), in order; side._loaded() sorts the keys at the end. Why: a
 * resync storm loads hundreds of snapshots in a burst; 2,000 tracked entry lists per snapshot
 * (the pure code's, untracked only once the side is loaded) were what the young generations
 * kept promoting, so full collections of the whole heap came every few snapshots. */

static int
load_pure(Side *s, PyObject *level)
{
    PyObject *one = PyTuple_Pack(1, level);
    if (one == NULL)
        return -1;
    int rc = call_method(s->side, str_load_levels, one, NULL, NULL);
    Py_DECREF(one);
    return rc;
}

/* One snapshot level: 0, or -1 with an exception set. *exact is book._exact, re-read after any
 * call into Python (which may switch the book to exact keys). */
static int
load_level(Side *s, PyObject *level, int *exact)
{
    PyObject *price, *qty, *key, *entry;
    int rc;
    if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) == 2) {
        price = PyTuple_GET_ITEM(level, 0);
        qty = PyTuple_GET_ITEM(level, 1);
    } else if (PyList_CheckExact(level) && PyList_GET_SIZE(level) == 2) {
        price = PyList_GET_ITEM(level, 0);
        qty = PyList_GET_ITEM(level, 1);
    } else {
        goto pure;
    }
    if (*exact || !PyUnicode_CheckExact(price) || !PyUnicode_CheckExact(qty))
        goto pure;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(price) < 0)
        return -1;
#endif
    if (PyUnicode_GET_LENGTH(price) > SHORT_PRICE)
        goto pure;
    rc = qty_nonzero(qty);
    if (rc < 0)
        return -1;
    if (!rc)
        goto pure;
    rc = PyDict_Contains(s->by_str, price);
    if (rc < 0)
        return -1;
    if (rc)
        goto pure;
    Py_INCREF(price);
    Py_INCREF(qty);
    rc = -1;
    key = float_key(s, price);
    if (key == NULL)
        goto done;
    int present = PyDict_Contains(s->by_key, key);
    if (present != 0) {
        Py_DECREF(key);
        if (present > 0) {
            Py_DECREF(price);
            Py_DECREF(qty);
            goto pure;
        }
        goto done;
    }
    entry = PyList_New(E_SIZE);
    if (entry == NULL) {
        Py_DECREF(key);
        goto done;
    }
    PyObject_GC_UnTrack(entry); /* before anything else allocates: never seen by the GC */
    Py_INCREF(price);
    PyList_SET_ITEM(entry, E_PRICE, price);
    Py_INCREF(qty);
    PyList_SET_ITEM(entry, E_QTY, qty);
    Py_INCREF(Py_None);
    PyList_SET_ITEM(entry, E_PAIR, Py_None);
    PyList_SET_ITEM(entry, E_KEY, key); /* steals */
    Py_INCREF(Py_None);
    PyList_SET_ITEM(entry, E_PRICE_DEC, Py_None);
    if (PyDict_SetItem(s->by_key, key, entry) == 0 && PyDict_SetItem(s->by_str, price, entry) == 0)
        rc = 0;
    Py_DECREF(entry);
done:
    Py_DECREF(price);
    Py_DECREF(qty);
    return rc;
pure:
    rc = load_pure(s, level);
    if (rc == 0) {
        *exact = book_exact(s);
        if (*exact < 0)
            return -1;
    }
    return rc;
}

PyDoc_STRVAR(load_doc,
"load(side, levels)\n--\n\n"
"_BookSide.load(side, levels), a snapshot, with the common case in C (see book.py).");

static PyObject *
bookside_load(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Side s;
    PyObject *levels, *level;
    int rc, exact;
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "load() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    levels = args[1];
    rc = side_open(&s, args[0]);
    if (rc != 0 || !PyList_CheckExact(levels)) {
        if (rc == 0)
            side_close(&s);
        return rc < 0 ? NULL : PyObject_CallMethodObjArgs(args[0], str_load, levels, NULL);
    }
    /* what load() does first: by_str.clear(); by_key.clear(); keys.clear() */
    PyDict_Clear(s.by_str);
    PyDict_Clear(s.by_key);
    rc = PyList_SetSlice(s.keys, 0, PyList_GET_SIZE(s.keys), NULL);
    exact = rc < 0 ? -1 : book_exact(&s);
    rc = exact < 0 ? -1 : 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(levels); i++) {
        level = PyList_GET_ITEM(levels, i);
        Py_INCREF(level);
        rc = load_level(&s, level, &exact);
        Py_DECREF(level);
    }
    if (rc == 0)
        rc = call_method(s.side, str_loaded, NULL, NULL, NULL);
    side_close(&s);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* -- best(n) ------------------------------------------------------------------------------ */

/* The entry's (Decimal price, Decimal qty), built once per change: a new reference or NULL.
 * Stores in the same order as the pure code: entry[4] first, then entry[2]. */
static PyObject *
entry_pair(PyObject *entry)
{
    PyObject *pair = PyList_GET_ITEM(entry, E_PAIR);
    if (pair != Py_None) {
        Py_INCREF(pair);
        return pair;
    }
    PyObject *price = PyList_GET_ITEM(entry, E_PRICE_DEC);
    if (price == Py_None) {
        price = PyObject_CallOneArg(decimal_type, PyList_GET_ITEM(entry, E_PRICE));
        if (price == NULL)
            return NULL;
        list_store(entry, E_PRICE_DEC, price);
    } else {
        Py_INCREF(price);
    }
    PyObject *qty = PyObject_CallOneArg(decimal_type, PyList_GET_ITEM(entry, E_QTY));
    if (qty == NULL) {
        Py_DECREF(price);
        return NULL;
    }
    pair = PyTuple_Pack(2, price, qty);
    Py_DECREF(price);
    Py_DECREF(qty);
    if (pair != NULL)
        list_store(entry, E_PAIR, pair);
    return pair;
}

/* by_key[key], as a new reference (KeyError as the dict raises it). */
static PyObject *
lookup_entry(PyObject *by_key, PyObject *key)
{
    PyObject *entry = PyDict_GetItemWithError(by_key, key);
    if (entry != NULL) {
        Py_INCREF(entry);
        return entry;
    }
    return PyErr_Occurred() ? NULL : PyObject_GetItem(by_key, key);
}

/* The pairs of the best n levels (0 <= n), or NULL; *pure set (and no exception) when the
 * pure code must run: an entry not made by book.py, or keys changed while reading them
 * (cannot happen: nothing here runs Python code that could reach the book). */
static PyObject *
best_levels(PyObject *by_key, PyObject *keys, Py_ssize_t n, int *pure)
{
    Py_ssize_t size = PyList_GET_SIZE(keys);
    Py_ssize_t count = n < size ? n : size;
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key = PyList_GET_ITEM(keys, size - 1 - i);
        Py_INCREF(key);
        PyObject *entry = lookup_entry(by_key, key);
        Py_DECREF(key);
        if (entry == NULL)
            goto fail;
        PyObject *pair = is_entry(entry) ? entry_pair(entry) : NULL;
        if (pair == NULL && !PyErr_Occurred())
            *pure = 1;
        Py_DECREF(entry);
        if (pair == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, pair);
        if (PyList_GET_SIZE(keys) != size) {
            *pure = 1;
            goto fail;
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(best_doc,
"best(side, n)\n--\n\n"
"_BookSide.best(side, n) in C: the n best levels as (Decimal, Decimal) pairs.");

static PyObject *
bookside_best(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *side, *fast, *out = NULL;
    int pure = 0;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "best() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    side = args[0];
    Py_ssize_t n = PyLong_CheckExact(args[1]) ? PyNumber_AsSsize_t(args[1], NULL) : -1;
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0)  /* not an int, or negative: what the pure code does with it */
        return PyObject_CallMethodObjArgs(side, str_best, args[1], NULL);
    if ((fast = PyObject_GetAttr(side, str_fast)) == NULL)
        return NULL;
    if (PyTuple_CheckExact(fast) && PyTuple_GET_SIZE(fast) == 5 &&
        PyDict_CheckExact(PyTuple_GET_ITEM(fast, 2)) && PyList_CheckExact(PyTuple_GET_ITEM(fast, 3)))
        out = best_levels(PyTuple_GET_ITEM(fast, 2), PyTuple_GET_ITEM(fast, 3), n, &pure);
    else
        pure = 1;
    Py_DECREF(fast);
    if (pure)  /* not the layout this module knows (no exception is set) */
        return PyObject_CallMethodObjArgs(side, str_best, args[1], NULL);
    return out;
}

/* -- the module --------------------------------------------------------------------------- */

/* -- untrack(entries) ------------------------------------------------------------------------
 * A book holds one 5-slot entry list per level: 10,000 at 5,000 levels per side, 400,000 for
 * 200 books of 1,000. Every list is tracked by the cyclic GC, so a full collection -- which a
 * burst of snapshots (a resync storm) triggers, since it creates that many new containers --
 * walks all of them while holding the GIL: ~200 ms for 200 books of 1,000 levels. An entry
 * only ever holds str, None, float or decimal.Decimal keys, Decimal pairs (tuples of two
 * Decimals): nothing that can reference the entry again, so it can never be part of a cycle
 * and need not be tracked. untrack(d) stops tracking every value of the dict d that is such
 * an entry (anything else is left as it is), and d itself when its keys are str/float/Decimal
 * and its values all such entries (insert_new keeps it so; any other insert -- book.py's
 * _set -- re-tracks it, which is merely slower); untrack(keys) stops tracking the sorted
 * keys list when it holds only floats/Decimals (a list never re-tracks itself; only keys are
 * ever inserted). Entries never gain other objects (book.py
 * only stores those types). Tracking only decides what the GC walks: no result changes. */
static int
atomic_item(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (o == Py_None || t == &PyUnicode_Type || t == &PyFloat_Type ||
        (PyObject *)t == decimal_type)
        return 1;
    if (t == &PyTuple_Type && PyTuple_GET_SIZE(o) == 2)
        return (PyObject *)Py_TYPE(PyTuple_GET_ITEM(o, 0)) == decimal_type &&
               (PyObject *)Py_TYPE(PyTuple_GET_ITEM(o, 1)) == decimal_type;
    return 0;
}

PyDoc_STRVAR(untrack_doc,
"untrack(entries)\n--\n\n"
"Stop the cyclic GC tracking a side's entries, its dicts and its keys list (see book.py).");

static PyObject *
bookside_untrack(PyObject *module, PyObject *entries)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    (void)module;
    if (PyList_CheckExact(entries)) { /* the sorted keys: floats or Decimals */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++)
            if (!atomic_item(PyList_GET_ITEM(entries, i)))
                Py_RETURN_NONE;
        if (PyObject_GC_IsTracked(entries))
            PyObject_GC_UnTrack(entries); /* lists never re-track themselves: stays so */
        Py_RETURN_NONE;
    }
    if (!PyDict_CheckExact(entries)) {
        PyErr_SetString(PyExc_TypeError, "untrack() needs a dict or a list");
        return NULL;
    }
    int all_entries = 1; /* every key atomic, every value an untracked entry */
    while (PyDict_Next(entries, &pos, &key, &value)) {
        if (!atomic_item(key))
            all_entries = 0;
        if (!PyList_CheckExact(value) || PyList_GET_SIZE(value) != E_SIZE) {
            all_entries = 0;
            continue;
        }
        if (!PyObject_GC_IsTracked(value))
            continue;
        int ok = 1;
        for (Py_ssize_t i = 0; ok && i < E_SIZE; i++)
            ok = atomic_item(PyList_GET_ITEM(value, i));
        if (ok)
            PyObject_GC_UnTrack(value);
        else
            all_entries = 0;
    }
    /* nothing in it can lead back to it either: the GC need not walk its 1,000s of items */
    if (all_entries && PyObject_GC_IsTracked(entries))
        PyObject_GC_UnTrack(entries);
    Py_RETURN_NONE;
}

static PyMethodDef bookside_methods[] = {
    {"untrack", (PyCFunction)bookside_untrack, METH_O, untrack_doc},
    {"update", (PyCFunction)(void (*)(void))bookside_update, METH_FASTCALL, update_doc},
    {"best", (PyCFunction)(void (*)(void))bookside_best, METH_FASTCALL, best_doc},
    {"load", (PyCFunction)(void (*)(void))bookside_load, METH_FASTCALL, load_doc},
    {"apply", (PyCFunction)(void (*)(void))bookside_apply, METH_FASTCALL, apply_doc},
    {"bind", (PyCFunction)(void (*)(void))bookside_bind, METH_FASTCALL, bind_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef bookside_module = {
    PyModuleDef_HEAD_INIT,
    "sixmm.protocol._bookside",
    "C hot path of sixmm.protocol.book._BookSide (optional; see book.py).",
    -1,
    bookside_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int
intern(PyObject **slot, const char *name)
{
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

static int
import_attr(PyObject **slot, const char *module, const char *name)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL)
        return -1;
    *slot = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__bookside(void)
{
    if (intern(&str_fast, "_fast") < 0 || intern(&str_exact, "_exact") < 0 ||
        intern(&str_set, "_set") < 0 ||
        intern(&str_remove_other, "_remove_other_spelling") < 0 ||
        intern(&str_update, "update") < 0 || intern(&str_best, "best") < 0 ||
        intern(&str_load, "load") < 0 || intern(&str_load_levels, "_load_levels") < 0 ||
        intern(&str_loaded, "_loaded") < 0 || intern(&str_update_kind, "update") < 0 ||
        intern(&str_invalidate, "invalidate") < 0)
        return NULL;
    if ((one = PyLong_FromLong(1)) == NULL)
        return NULL;
    if (import_attr(&decimal_type, "decimal", "Decimal") < 0 ||
        import_attr(&bisect_left_fn, "bisect", "bisect_left") < 0 ||
        import_attr(&insort_fn, "bisect", "insort") < 0)
        return NULL;
    return PyModule_Create(&bookside_module);
}
