/*
 * is_numeral(), check_numeral() and is_ascii_str(), shared by the C fast paths of the wire layer (_depthfast.c, _wirefast.c).
 *
 * A numeral: 1-30 ASCII digits, optionally "." and 1-30 ASCII digits. Decimal(numeral) is
 * always finite, non-negative, with an adjusted exponent in [-30, 29]: it passes every check
 * the pure validators make on a price or a quantity. Header-only (static): each extension
 * module is one translation unit.
 */
#ifndef SIXMM_NUMERAL_H
#define SIXMM_NUMERAL_H

#include <Python.h>

/* 1 if s[0:n] (ASCII, as from a PyUnicode_1BYTE_KIND str) is a numeral; *nonzero gets whether
 * it has a non-zero digit. */
static int
is_numeral(const Py_UCS1 *s, Py_ssize_t n, int *nonzero)
{
    Py_ssize_t i = 0, start;
    int nz = 0;
    start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        nz |= s[i] != '0';
        i++;
    }
    if (i == start || i - start > 30)
        return 0;
    if (i < n) {
        if (s[i] != '.')
            return 0;
        i++;
        start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            nz |= s[i] != '0';
            i++;
        }
        if (i != n || i == start || i - start > 30)
            return 0;
    }
    *nonzero = nz;
    return 1;
}

/* 1 when the str s is compact ASCII (its PyUnicode_1BYTE_DATA are its characters), else 0. */
static int
is_ascii_str(PyObject *s)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(s) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    return PyUnicode_IS_ASCII(s) ? 1 : 0;
}

/* 1 valid, 0 not valid; only exact, compact ASCII str objects can be valid. */
static int
check_numeral(PyObject *s, int need_nonzero)
{
    int nz = 0;
    Py_ssize_t n;
    if (!PyUnicode_CheckExact(s) || !is_ascii_str(s))
        return 0;
    n = PyUnicode_GET_LENGTH(s);
    if (n < 1 || n > 61)
        return 0;
    if (!is_numeral(PyUnicode_1BYTE_DATA(s), n, &nz))
        return 0;
    return need_nonzero ? nz : 1;
}

#endif
