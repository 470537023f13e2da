/* Experiment, not part of ipsec-suite: ESP tunnel-mode AES-128-GCM (RFC 4106) batch seal/open
 * over IPv4 in C on OpenSSL EVP, to measure what native per-packet code would buy.
 * See README.md.  Built by build.sh into build/ (ignored by git). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <openssl/evp.h>

#define OUTER 20
#define HEAD (OUTER + 16)       /* outer IPv4 + SPI + seq + 8-byte IV */
#define ICV 16

static const unsigned char PAD[4] = {1, 2, 3, 4};

static void put16(unsigned char *p, unsigned v) { p[0] = v >> 8; p[1] = v; }
static void put32(unsigned char *p, unsigned long v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }

static unsigned csum(const unsigned char *h)
{
    unsigned long s = 0;
    for (int i = 0; i < 20; i += 2) s += (h[i] << 8) | h[i + 1];
    while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
    return ~s & 0xFFFF;
}

static PyObject *seal_batch(PyObject *self, PyObject *args)
{
    const unsigned char *key, *salt, *src, *dst;
    Py_ssize_t klen, slen, srclen, dstlen;
    unsigned long spi;
    unsigned long long seq0, ident0;
    PyObject *pkts;
    if (!PyArg_ParseTuple(args, "y#y#kKKy#y#O!", &key, &klen, &salt, &slen, &spi, &seq0, &ident0,
                          &src, &srclen, &dst, &dstlen, &PyList_Type, &pkts))
        return NULL;
    if (klen != 16 || slen != 4 || srclen != 4 || dstlen != 4) {
        PyErr_SetString(PyExc_ValueError, "key16, salt4, src4, dst4");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(pkts);
    PyObject *res = PyList_New(n);
    if (!res) return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, NULL)) goto ossl_fail;
    unsigned char nonce[12];
    memcpy(nonce, salt, 4);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(pkts, i);
        if (!PyBytes_Check(p) || PyBytes_GET_SIZE(p) < 20) {
            PyErr_SetString(PyExc_ValueError, "packets must be bytes of at least 20");
            goto fail;
        }
        const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(p);
        Py_ssize_t len = PyBytes_GET_SIZE(p);
        int padlen = (int)((4 - (len + 2) % 4) % 4);
        Py_ssize_t ptlen = len + padlen + 2, total = HEAD + ptlen + ICV;
        if (total > 0xFFFF) { PyErr_SetString(PyExc_ValueError, "packet too large"); goto fail; }
        PyObject *o = PyBytes_FromStringAndSize(NULL, total);
        if (!o) goto fail;
        PyList_SET_ITEM(res, i, o);
        unsigned char *b = (unsigned char *)PyBytes_AS_STRING(o);
        unsigned long long seq = seq0 + i + 1;
        b[0] = 0x45; b[1] = in[1]; put16(b + 2, total);
        put16(b + 4, (ident0 + i + 1) & 0xFFFF);
        b[6] = in[6] & 0x40; b[7] = 0; b[8] = 64; b[9] = 50; b[10] = b[11] = 0;
        memcpy(b + 12, src, 4); memcpy(b + 16, dst, 4);
        put16(b + 10, csum(b));
        put32(b + 20, spi); put32(b + 24, (unsigned long)seq);
        put32(b + 28, seq >> 32); put32(b + 32, (unsigned long)seq);
        memcpy(nonce + 4, b + 28, 8);
        unsigned char *pt = b + HEAD;
        memcpy(pt, in, len);
        memcpy(pt + len, PAD, padlen);
        pt[len + padlen] = padlen; pt[len + padlen + 1] = 4;
        int ol;
        if (!EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce)
            || !EVP_EncryptUpdate(ctx, NULL, &ol, b + 20, 8)
            || !EVP_EncryptUpdate(ctx, pt, &ol, pt, (int)ptlen)
            || !EVP_EncryptFinal_ex(ctx, pt + ptlen, &ol)
            || !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, ICV, pt + ptlen))
            goto ossl_fail;
    }
    EVP_CIPHER_CTX_free(ctx);
    return res;
ossl_fail:
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL error");
fail:
    EVP_CIPHER_CTX_free(ctx);
    Py_DECREF(res);
    return NULL;
}

static PyObject *open_batch(PyObject *self, PyObject *args)
{
    const unsigned char *key, *salt;
    Py_ssize_t klen, slen;
    PyObject *pkts;
    if (!PyArg_ParseTuple(args, "y#y#O!", &key, &klen, &salt, &slen, &PyList_Type, &pkts))
        return NULL;
    if (klen != 16 || slen != 4) { PyErr_SetString(PyExc_ValueError, "key16, salt4"); return NULL; }
    Py_ssize_t n = PyList_GET_SIZE(pkts);
    PyObject *res = PyList_New(n);
    if (!res) return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL error");
        goto fail;
    }
    unsigned char nonce[12];
    memcpy(nonce, salt, 4);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(pkts, i);
        if (!PyBytes_Check(p)) { PyErr_SetString(PyExc_TypeError, "bytes expected"); goto fail; }
        const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(p);
        Py_ssize_t len = PyBytes_GET_SIZE(p), ctlen = len - HEAD - ICV;
        PyObject *o = NULL;
        int ol;
        if (ctlen < 2 || in[0] != 0x45 || in[9] != 50) goto drop;
        memcpy(nonce + 4, in + 28, 8);
        o = PyBytes_FromStringAndSize(NULL, ctlen);
        if (!o) goto fail;
        unsigned char *pt = (unsigned char *)PyBytes_AS_STRING(o);
        if (!EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce)
            || !EVP_DecryptUpdate(ctx, NULL, &ol, in + 20, 8)
            || !EVP_DecryptUpdate(ctx, pt, &ol, in + HEAD, (int)ctlen)
            || !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, ICV, (void *)(in + len - ICV))
            || EVP_DecryptFinal_ex(ctx, pt + ctlen, &ol) <= 0)
            goto drop;
        int padlen = pt[ctlen - 2];
        if (pt[ctlen - 1] != 4 || padlen > ctlen - 2) goto drop;
        for (int k = 0; k < padlen; k++)
            if (pt[ctlen - 2 - padlen + k] != k + 1) goto drop;
        if (padlen + 2 && _PyBytes_Resize(&o, ctlen - 2 - padlen) < 0) goto fail;
        PyList_SET_ITEM(res, i, o);
        continue;
    drop:
        Py_XDECREF(o);
        Py_INCREF(Py_None);
        PyList_SET_ITEM(res, i, Py_None);
    }
    EVP_CIPHER_CTX_free(ctx);
    return res;
fail:
    EVP_CIPHER_CTX_free(ctx);
    Py_DECREF(res);
    return NULL;
}

static PyMethodDef methods[] = {
    {"seal_batch", seal_batch, METH_VARARGS, "ESP tunnel AES-128-GCM seal of a list of IPv4 packets"},
    {"open_batch", open_batch, METH_VARARGS, "inverse of seal_batch; None where a packet fails"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "espnative", NULL, -1, methods};

PyMODINIT_FUNC PyInit_espnative(void) { return PyModule_Create(&mod); }
