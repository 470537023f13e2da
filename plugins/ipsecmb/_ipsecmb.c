/* The ipsecmb backend's C extension: intel-ipsec-mb primitives bound to one key each.
 *
 * Owns: expanding a key once (at object creation), computing one message or a batch of
 * messages laid out in one caller-owned buffer, and wiping the expanded keys when the object
 * goes; and the fused tunnel-mode ESP calls (esp_protect, esp_protect_into, esp_unprotect),
 * which apply the rules of ipsec_core.dataplane.esp.bulk to a whole batch in one call, from a
 * template and parameters the core gives, and hand back every packet those rules do not cover.
 * Must not: decide anything the core's bulk path would decide differently (the byte-for-byte
 * tests against one-by-one ESP hold both to that), keep any state between calls (sequence
 * numbers, the replay window and counters stay in the core), or keep a pointer into a
 * caller's buffer after a call returns.
 *
 * Memory safety, the rules every entry point follows:
 * - every buffer is taken through the buffer protocol and released before returning;
 * - every offset and length is checked against the buffer it indexes before any byte is
 *   touched (64-bit arithmetic, negative values refused), and a bad batch raises ValueError
 *   without computing anything;
 * - the GIL is released while the library computes (the buffers stay exported, so a
 *   bytearray cannot be resized meanwhile); each thread has its own IMB_MGR.
 *
 * Types: Aead (aes-gcm, chacha20-poly1305), Cipher (aes-cbc, aes-ctr), Mac (hmac-sha1/256/
 * 384/512, aes-xcbc, aes-cmac) and Chain (a Cipher or none, then a Mac: ESP's
 * encrypt-then-MAC over a batch through the multi-buffer job API).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <intel-ipsec-mb.h>

/* Single messages shorter than this keep the GIL: handing it over costs more than the work. */
#define GIL_RELEASE_BYTES 4096
/* Most messages one batch call takes (the job API's scratch is sized per call). */
#define MAX_BATCH (1 << 20)

enum kind {
    K_GCM = 1, K_CHACHA, K_CBC, K_CTR,
    K_HMAC_SHA1, K_HMAC_SHA256, K_HMAC_SHA384, K_HMAC_SHA512, K_XCBC, K_CMAC,
};

static __thread IMB_MGR *tls_mgr;     /* one per thread, never shared: the GIL is released */

static IMB_MGR *
get_mgr(void)
{
    if (tls_mgr == NULL) {
        IMB_MGR *m = alloc_mb_mgr(0);
        if (m == NULL) {
            PyErr_SetString(PyExc_MemoryError, "intel-ipsec-mb: alloc_mb_mgr failed");
            return NULL;
        }
        init_mb_mgr_auto(m, NULL);
        if (imb_get_errno(m) != 0) {
            PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb: init_mb_mgr_auto failed: %s",
                         imb_get_strerror(imb_get_errno(m)));
            free_mb_mgr(m);
            return NULL;
        }
        tls_mgr = m;
    }
    return tls_mgr;
}

static void *
aligned_key(size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, size) != 0)
        return NULL;
    memset(p, 0, size);
    return p;
}

static void
wipe_free(void *p, size_t size)
{
    if (p != NULL) {
        explicit_bzero(p, size);
        free(p);
    }
}

/* Constant-time compare of n bytes: 0 when equal. */
static int
ct_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d;
}

static const uint8_t EMPTY[64];

/* ---------------------------------------------------------------------------------------- */
/* buffers                                                                                  */

/* An int64 vector of `n` items (or any n if n < 0) from a buffer; fills *n. */
static int
get_i64(PyObject *obj, Py_buffer *view, Py_ssize_t *n, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if (view->itemsize != 8 || (strcmp(f, "q") && strcmp(f, "l")) || view->ndim > 1) {
        PyErr_Format(PyExc_TypeError, "%s must be a 1-d int64 array (numpy dtype int64), "
                     "not format %s", name, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    Py_ssize_t items = view->len / 8;
    if (*n >= 0 && items != *n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd items, expected %zd", name, items, *n);
        PyBuffer_Release(view);
        return -1;
    }
    *n = items;
    return 0;
}

/* A bytes-like of exactly n * width bytes (width > 0), or of n * w bytes with w derived when
 * *width is -1 (then n must be > 0 or the buffer empty). */
static int
get_rows(PyObject *obj, Py_buffer *view, Py_ssize_t n, Py_ssize_t *width, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (*width < 0) {
        if (n == 0) {
            *width = 0;
            return 0;
        }
        if (view->len % n) {
            PyErr_Format(PyExc_ValueError, "%s: %zd bytes do not split into %zd equal rows",
                         name, view->len, n);
            PyBuffer_Release(view);
            return -1;
        }
        *width = view->len / n;
        return 0;
    }
    if (view->len != n * *width) {
        PyErr_Format(PyExc_ValueError, "%s must be %zd bytes (%zd x %zd), not %zd", name,
                     n * *width, n, *width, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Check that [off + lo, off + len + hi) lies inside a buffer of `size` bytes, for every item;
 * lo <= 0 <= hi are fixed extents around each region. */
static int
check_regions(const int64_t *off, const int64_t *len, Py_ssize_t n, Py_ssize_t size,
              int64_t lo, int64_t hi, int64_t min_len, int64_t max_len, const char *what)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t o = off[i], l = len[i];
        if (o < 0 || l < min_len || l > max_len) {
            PyErr_Format(PyExc_ValueError, "%s %zd: offset %lld / length %lld out of range "
                         "(length %lld..%lld)", what, i, (long long)o, (long long)l,
                         (long long)min_len, (long long)max_len);
            return -1;
        }
        if (o + lo < 0 || (uint64_t)o + (uint64_t)l + (uint64_t)hi > (uint64_t)size) {
            PyErr_Format(PyExc_ValueError, "%s %zd: bytes %lld..%lld are outside the %zd-byte "
                         "buffer", what, i, (long long)(o + lo), (long long)(o + l + hi), size);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Aead                                                                                     */

typedef struct {
    PyObject_HEAD
    int kind;
    int key_len;
    int tag_bytes;
    void *key;             /* struct gcm_key_data, or the 32-byte ChaCha20 key */
    size_t key_size;
    PyObject *auth_error;  /* raised by decrypt on a bad tag */
} AeadObject;

static void
aead_dealloc(AeadObject *self)
{
    wipe_free(self->key, self->key_size);
    self->key = NULL;
    Py_CLEAR(self->auth_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
aead_init(AeadObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "key", "tag_bytes", "auth_error", NULL};
    int kind, tag;
    Py_buffer key;
    PyObject *err;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iy*iO", kwlist, &kind, &key, &tag, &err))
        return -1;
    IMB_MGR *mgr = get_mgr();
    int rc = -1;
    if (mgr == NULL)
        goto out;
    if (self->key != NULL) {
        PyErr_SetString(PyExc_TypeError, "Aead is initialised once");
        goto out;
    }
    if (kind == K_GCM) {
        if (key.len != 16 && key.len != 24 && key.len != 32) {
            PyErr_Format(PyExc_ValueError, "aes-gcm key must be 16, 24 or 32 bytes, not %zd", key.len);
            goto out;
        }
        if (tag != 8 && tag != 12 && tag != 16) {
            PyErr_Format(PyExc_ValueError, "aes-gcm tag must be 8, 12 or 16 bytes, not %d", tag);
            goto out;
        }
        self->key_size = sizeof(struct gcm_key_data);
        self->key = aligned_key(self->key_size);
        if (self->key == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        if (key.len == 16)
            IMB_AES128_GCM_PRE(mgr, key.buf, self->key);
        else if (key.len == 24)
            IMB_AES192_GCM_PRE(mgr, key.buf, self->key);
        else
            IMB_AES256_GCM_PRE(mgr, key.buf, self->key);
    } else if (kind == K_CHACHA) {
        if (key.len != 32 || tag != 16) {
            PyErr_SetString(PyExc_ValueError, "chacha20-poly1305 takes a 32-byte key and a 16-byte tag");
            goto out;
        }
        self->key_size = 32;
        self->key = aligned_key(32);
        if (self->key == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        memcpy(self->key, key.buf, 32);
    } else {
        PyErr_Format(PyExc_ValueError, "Aead kind %d is not an AEAD", kind);
        goto out;
    }
    self->kind = kind;
    self->key_len = (int)key.len;
    self->tag_bytes = tag;
    Py_INCREF(err);
    Py_XSETREF(self->auth_error, err);
    rc = 0;
out:
    PyBuffer_Release(&key);
    return rc;
}

/* Seal (enc=1) or open one message; `tag` receives the computed tag (16 bytes of room). */
static void
aead_one(IMB_MGR *mgr, const AeadObject *self, int enc, const uint8_t *iv, const uint8_t *src,
         uint8_t *dst, uint64_t len, const uint8_t *aad, uint64_t aad_len, uint8_t *tag)
{
    if (self->kind == K_GCM) {
        struct gcm_context_data ctx;
        uint64_t t = (uint64_t)self->tag_bytes;
        if (len == 0) {   /* the library wants a valid pointer even for nothing */
            src = EMPTY;
            dst = (uint8_t *)tag + 16;   /* never written: len is 0 */
        }
        if (aad_len == 0)
            aad = EMPTY;
        if (enc) {
            if (self->key_len == 16)
                IMB_AES128_GCM_ENC(mgr, self->key, &ctx, dst, src, len, iv, aad, aad_len, tag, t);
            else if (self->key_len == 24)
                IMB_AES192_GCM_ENC(mgr, self->key, &ctx, dst, src, len, iv, aad, aad_len, tag, t);
            else
                IMB_AES256_GCM_ENC(mgr, self->key, &ctx, dst, src, len, iv, aad, aad_len, tag, t);
        } else {
            if (self->key_len == 16)
                IMB_AES128_GCM_DEC(mgr, self->key, &ctx, dst, src, len, iv, aad, aad_len, tag, t);
            else if (self->key_len == 24)
                IMB_AES192_GCM_DEC(mgr, self->key, &ctx, dst, src, len, iv, aad, aad_len, tag, t);
            else
                IMB_AES256_GCM_DEC(mgr, self->key, &ctx, dst, src, len, iv, aad, aad_len, tag, t);
        }
        explicit_bzero(&ctx, sizeof ctx);
    } else {
        struct chacha20_poly1305_context_data ctx;
        if (aad_len == 0)
            aad = EMPTY;
        IMB_CHACHA20_POLY1305_INIT(mgr, self->key, &ctx, iv, aad, aad_len);
        if (enc) {
            if (len)
                IMB_CHACHA20_POLY1305_ENC_UPDATE(mgr, self->key, &ctx, dst, src, len);
            IMB_CHACHA20_POLY1305_ENC_FINALIZE(mgr, &ctx, tag, 16);
        } else {
            if (len)
                IMB_CHACHA20_POLY1305_DEC_UPDATE(mgr, self->key, &ctx, dst, src, len);
            IMB_CHACHA20_POLY1305_DEC_FINALIZE(mgr, &ctx, tag, 16);
        }
        explicit_bzero(&ctx, sizeof ctx);
    }
}

static PyObject *
aead_encrypt(AeadObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer nonce = {0}, pt = {0}, aad = {0};
    PyObject *out = NULL;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encrypt(nonce, plaintext, aad)");
        return NULL;
    }
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (PyObject_GetBuffer(args[0], &nonce, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &pt, PyBUF_SIMPLE) < 0)
        goto done;
    if (PyObject_GetBuffer(args[2], &aad, PyBUF_SIMPLE) < 0)
        goto done;
    if (nonce.len != 12) {
        PyErr_Format(PyExc_ValueError, "nonce must be 12 bytes, not %zd", nonce.len);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, pt.len + self->tag_bytes);
    if (out == NULL)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    uint8_t tag[32];
    if (pt.len >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        aead_one(mgr, self, 1, nonce.buf, pt.buf, o, pt.len, aad.buf, aad.len, tag);
        Py_END_ALLOW_THREADS
    } else {
        aead_one(mgr, self, 1, nonce.buf, pt.buf, o, pt.len, aad.buf, aad.len, tag);
    }
    memcpy(o + pt.len, tag, self->tag_bytes);
done:
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&pt);
    PyBuffer_Release(&aad);
    return out;
}

static PyObject *
aead_decrypt(AeadObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer nonce = {0}, ct = {0}, aad = {0};
    PyObject *out = NULL;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decrypt(nonce, ciphertext_and_tag, aad)");
        return NULL;
    }
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (PyObject_GetBuffer(args[0], &nonce, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &ct, PyBUF_SIMPLE) < 0)
        goto done;
    if (PyObject_GetBuffer(args[2], &aad, PyBUF_SIMPLE) < 0)
        goto done;
    if (nonce.len != 12) {
        PyErr_Format(PyExc_ValueError, "nonce must be 12 bytes, not %zd", nonce.len);
        goto done;
    }
    Py_ssize_t t = self->tag_bytes;
    if (ct.len < t) {
        PyErr_SetString(self->auth_error, "AEAD input shorter than its tag");
        goto done;
    }
    Py_ssize_t n = ct.len - t;
    out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    uint8_t tag[32];
    int bad;
    if (n >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        aead_one(mgr, self, 0, nonce.buf, ct.buf, o, n, aad.buf, aad.len, tag);
        Py_END_ALLOW_THREADS
    } else {
        aead_one(mgr, self, 0, nonce.buf, ct.buf, o, n, aad.buf, aad.len, tag);
    }
    bad = ct_diff(tag, (const uint8_t *)ct.buf + n, t);
    if (bad) {
        Py_CLEAR(out);           /* the plaintext of a forged message never leaves */
        PyErr_SetString(self->auth_error, "AEAD tag does not verify");
    }
done:
    PyBuffer_Release(&nonce);
    PyBuffer_Release(&ct);
    PyBuffer_Release(&aad);
    return out;
}

/* seal_batch / open_batch(buf, offsets, lengths, nonces, aads):
 * message i is buf[offsets[i] : offsets[i] + lengths[i]], computed in place, its tag right
 * after it; nonces is n x 12 bytes, aads n x w bytes (w = len(aads) / n, the same for all).
 * open_batch returns n verdict bytes: 1 where the tag verifies, 0 where it does not. */
static PyObject *
aead_batch(AeadObject *self, PyObject *args, int enc)
{
    PyObject *bo, *oo, *lo, *no, *ao;
    Py_buffer buf = {0}, offs = {0}, lens = {0}, nonces = {0}, aads = {0};
    PyObject *result = NULL;
    uint8_t *verdicts = NULL;
    if (!PyArg_ParseTuple(args, enc ? "OOOOO:seal_batch" : "OOOOO:open_batch",
                          &bo, &oo, &lo, &no, &ao))
        return NULL;
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    Py_ssize_t n = -1, nw = 12, aw = -1;
    if (PyObject_GetBuffer(bo, &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (get_i64(oo, &offs, &n, "offsets") < 0)
        goto done;
    if (get_i64(lo, &lens, &n, "lengths") < 0)
        goto done;
    if (n > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "a batch takes at most %d messages, not %zd", MAX_BATCH, n);
        goto done;
    }
    if (get_rows(no, &nonces, n, &nw, "nonces") < 0)
        goto done;
    if (get_rows(ao, &aads, n, &aw, "aads") < 0)
        goto done;
    int64_t t = self->tag_bytes;
    if (check_regions(offs.buf, lens.buf, n, buf.len, 0, t, 0, INT64_MAX / 4, "message") < 0)
        goto done;
    if (!enc) {
        result = PyBytes_FromStringAndSize(NULL, n);
        if (result == NULL)
            goto done;
        verdicts = (uint8_t *)PyBytes_AS_STRING(result);
    }
    const int64_t *off = offs.buf, *len = lens.buf;
    uint8_t *base = buf.buf;
    const uint8_t *nb = nonces.buf, *ab = aads.buf;
    Py_BEGIN_ALLOW_THREADS
    uint8_t tag[32];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *m = base + off[i];
        aead_one(mgr, self, enc, nb + 12 * i, m, m, (uint64_t)len[i], ab + aw * i,
                 (uint64_t)aw, tag);
        if (enc)
            memcpy(m + len[i], tag, (size_t)t);
        else
            verdicts[i] = !ct_diff(tag, m + len[i], (size_t)t);
    }
    Py_END_ALLOW_THREADS
    if (enc) {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&nonces);
    PyBuffer_Release(&aads);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* ESP framing over a list of packets (the batch path's common case)                         */
/*
 * The core computes every header field and hands over rows of ready header bytes, the next
 * header byte of each packet, nonces / IVs and AADs; here the rows, the packets, the trailer
 * (RFC 4303 2.4 padding 1, 2, 3, ... to `block`, pad length, next header) and the ICV go into
 * one new bytes object per packet, sealed in place: no Python object per packet other than the
 * result, and no copy of a packet other than into its result.  Opening decrypts every packet
 * into one new bytes object (plaintexts back to back) that the core checks and cuts.
 */

typedef struct {
    Py_ssize_t n;
    Py_buffer *views;       /* one per packet, held (so the bytes cannot change) until release */
} packet_views;

static void
release_views(packet_views *pv)
{
    if (pv->views != NULL) {
        for (Py_ssize_t i = 0; i < pv->n; i++)
            if (pv->views[i].obj != NULL)
                PyBuffer_Release(&pv->views[i]);
        PyMem_Free(pv->views);
    }
    pv->views = NULL;
    pv->n = 0;
}

/* A list of bytes-like objects, each held through the buffer protocol. */
static int
get_views(PyObject *list, packet_views *pv)
{
    pv->n = 0;
    pv->views = NULL;
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "packets must be a list of bytes, not %.80s",
                     Py_TYPE(list)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "a batch takes at most %d messages, not %zd", MAX_BATCH, n);
        return -1;
    }
    pv->views = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    if (pv->views == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(list, i), &pv->views[i], PyBUF_SIMPLE) < 0) {
            pv->n = i;
            release_views(pv);
            return -1;
        }
        pv->n = i + 1;
    }
    return 0;
}

/* peek(packets, k) -> (lengths, heads): every packet's length (n int64, native order) and its
 * first k bytes (n x k, zero-filled past a short packet's end). */
static PyObject *
mod_peek(PyObject *m, PyObject *args)
{
    PyObject *list;
    Py_ssize_t k;
    if (!PyArg_ParseTuple(args, "O!n:peek", &PyList_Type, &list, &k))
        return NULL;
    if (k < 0 || k > 4096) {
        PyErr_Format(PyExc_ValueError, "peek takes 0..4096 bytes of each packet, not %zd", k);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "a batch takes at most %d messages, not %zd", MAX_BATCH, n);
        return NULL;
    }
    PyObject *lens = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *heads = PyBytes_FromStringAndSize(NULL, n * k);
    if (lens == NULL || heads == NULL)
        goto fail;
    int64_t *l = (int64_t *)PyBytes_AS_STRING(lens);
    uint8_t *h = (uint8_t *)PyBytes_AS_STRING(heads);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(list, i);
        const char *data;
        Py_ssize_t len;
        Py_buffer view = {0};
        if (PyBytes_CheckExact(p)) {
            data = PyBytes_AS_STRING(p);
            len = PyBytes_GET_SIZE(p);
        } else {
            if (PyObject_GetBuffer(p, &view, PyBUF_SIMPLE) < 0)
                goto fail;
            data = view.buf;
            len = view.len;
        }
        l[i] = (int64_t)len;
        Py_ssize_t c = len < k ? len : k;
        memcpy(h + k * i, data, (size_t)c);
        memset(h + k * i + c, 0, (size_t)(k - c));
        if (view.obj != NULL)
            PyBuffer_Release(&view);
    }
    PyObject *r = PyTuple_Pack(2, lens, heads);
    Py_DECREF(lens);
    Py_DECREF(heads);
    return r;
fail:
    Py_XDECREF(lens);
    Py_XDECREF(heads);
    return NULL;
}

/* cut(buf, offsets, lengths) -> [bytes(buf[o:o + l]) ...], every region checked. */
static PyObject *
mod_cut(PyObject *m, PyObject *args)
{
    PyObject *bo, *oo, *lo;
    Py_buffer buf = {0}, offs = {0}, lens = {0};
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "OOO:cut", &bo, &oo, &lo))
        return NULL;
    Py_ssize_t n = -1;
    if (PyObject_GetBuffer(bo, &buf, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (get_i64(oo, &offs, &n, "offsets") < 0)
        goto done;
    if (get_i64(lo, &lens, &n, "lengths") < 0)
        goto done;
    if (check_regions(offs.buf, lens.buf, n, buf.len, 0, 0, 0, INT64_MAX / 4, "region") < 0)
        goto done;
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    const int64_t *o = offs.buf, *l = lens.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)buf.buf + o[i], (Py_ssize_t)l[i]);
        if (b == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, b);
    }
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&lens);
    return out;
}

/* The results of esp_seal: n bytes objects of head + payload + trailer + icv bytes, with the
 * header rows, the packets and the trailers written; *pt points at each one's ESP payload. */
static PyObject *
frame(const packet_views *pv, const uint8_t *heads, Py_ssize_t head_len, const uint8_t *nhs,
      int block, int icv, uint8_t **at, int64_t *plen)
{
    static const uint8_t pad_bytes[256] = {
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46,
        47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68,
        69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90,
        91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109,
        110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126,
        127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143,
        144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160,
        161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 174, 175, 176, 177,
        178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194,
        195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211,
        212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227, 228,
        229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245,
        246, 247, 248, 249, 250, 251, 252, 253, 254, 255, 0};
    Py_ssize_t n = pv->n;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t len = pv->views[i].len;
        int64_t pad = (int64_t)((block - (len + 2) % block) % block);
        int64_t total = head_len + len + pad + 2 + icv;
        if (total > 0xFFFFF) {
            PyErr_Format(PyExc_ValueError, "packet %zd: %lld bytes is too long for ESP", i,
                         (long long)len);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (b == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, b);
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(b);
        memcpy(o, heads + head_len * i, (size_t)head_len);
        memcpy(o + head_len, pv->views[i].buf, (size_t)len);
        memcpy(o + head_len + len, pad_bytes, (size_t)pad);
        o[head_len + len + pad] = (uint8_t)pad;
        o[head_len + len + pad + 1] = nhs[i];
        at[i] = o;
        plen[i] = len + pad + 2;
    }
    return out;
}

/* The arguments both esp_seal calls share. */
typedef struct {
    packet_views pv;
    Py_buffer heads, nhs, rows, aads;
    Py_ssize_t head_len;
    uint8_t **at;
    int64_t *plen;
} seal_args;

static void
seal_args_release(seal_args *a)
{
    release_views(&a->pv);
    PyBuffer_Release(&a->heads);
    PyBuffer_Release(&a->nhs);
    PyBuffer_Release(&a->rows);
    PyBuffer_Release(&a->aads);
    PyMem_Free(a->at);
    PyMem_Free(a->plen);
    a->at = NULL;
    a->plen = NULL;
}

/* (packets, heads, head_len, nhs, block, rows, aads): rows are nonces (width row_w) or IVs;
 * aads are n x w bytes (w > 0 derived), or None when aad_optional. */
static int
seal_args_get(PyObject *args, seal_args *a, int *block, Py_ssize_t row_w, int aad_optional,
              const char *fmt)
{
    PyObject *po, *ho, *no, *ro, *ao;
    memset(a, 0, sizeof *a);
    if (!PyArg_ParseTuple(args, fmt, &po, &ho, &a->head_len, &no, block, &ro, &ao))
        return -1;
    if (*block < 1 || *block > 255) {
        PyErr_Format(PyExc_ValueError, "block must be 1..255 bytes, not %d", *block);
        return -1;
    }
    if (a->head_len < 0 || a->head_len > 1024) {
        PyErr_Format(PyExc_ValueError, "head_len must be 0..1024 bytes, not %zd", a->head_len);
        return -1;
    }
    if (get_views(po, &a->pv) < 0)
        return -1;
    Py_ssize_t n = a->pv.n, one = 1, aw = -1;
    if (get_rows(ho, &a->heads, n, &a->head_len, "heads") < 0)
        return -1;
    if (get_rows(no, &a->nhs, n, &one, "nhs") < 0)
        return -1;
    if (get_rows(ro, &a->rows, n, &row_w, "nonces/ivs") < 0)
        return -1;
    if (ao == Py_None && aad_optional) {
        ;
    } else if (get_rows(ao, &a->aads, n, &aw, "aads/his") < 0) {
        return -1;
    }
    a->at = PyMem_Malloc(n ? (size_t)n * sizeof(uint8_t *) : 1);
    a->plen = PyMem_Malloc(n ? (size_t)n * sizeof(int64_t) : 1);
    if (a->at == NULL || a->plen == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Aead.esp_seal(packets, heads, head_len, nhs, block, nonces, aads) -> [bytes]:
 * result i = heads row i || seal(packet i || padding || pad length || nhs[i]) || tag. */
static PyObject *
aead_esp_seal(AeadObject *self, PyObject *args)
{
    seal_args a;
    int block;
    PyObject *out = NULL;
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (seal_args_get(args, &a, &block, 12, 0, "OOnOiOO:esp_seal") < 0)
        goto done;
    Py_ssize_t n = a.pv.n, aw = n ? a.aads.len / n : 0;
    out = frame(&a.pv, a.heads.buf, a.head_len, a.nhs.buf, block, self->tag_bytes, a.at, a.plen);
    if (out == NULL)
        goto done;
    const uint8_t *nb = a.rows.buf, *ab = a.aads.buf;
    Py_ssize_t hl = a.head_len;
    Py_BEGIN_ALLOW_THREADS
    uint8_t tag[32];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *m = a.at[i] + hl;
        aead_one(mgr, self, 1, nb + 12 * i, m, m, (uint64_t)a.plen[i], ab + aw * i,
                 (uint64_t)aw, tag);
        memcpy(m + a.plen[i], tag, (size_t)self->tag_bytes);
    }
    Py_END_ALLOW_THREADS
done:
    seal_args_release(&a);
    return out;
}

/* Aead.esp_open(packets, ct_at, ct_lengths, nonces, aads) -> (verdicts, plaintexts):
 * packet i's cipher text is ct_lengths[i] bytes from ct_at, its tag right after; the
 * plaintexts go back to back into one bytes object (packet i's at the sum of the lengths
 * before it); verdict i is 1 where the tag verifies. */
static PyObject *
aead_esp_open(AeadObject *self, PyObject *args)
{
    PyObject *po, *lo, *no, *ao;
    Py_ssize_t ct_at;
    packet_views pv = {0};
    Py_buffer lens = {0}, nonces = {0}, aads = {0};
    PyObject *verdicts = NULL, *plain = NULL, *result = NULL;
    if (!PyArg_ParseTuple(args, "OnOOO:esp_open", &po, &ct_at, &lo, &no, &ao))
        return NULL;
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (ct_at < 0 || ct_at > 1024) {
        PyErr_Format(PyExc_ValueError, "ct_at must be 0..1024, not %zd", ct_at);
        return NULL;
    }
    if (get_views(po, &pv) < 0)
        goto done;
    Py_ssize_t n = pv.n, nw = 12, aw = -1;
    if (get_i64(lo, &lens, &n, "ct_lengths") < 0)
        goto done;
    if (get_rows(no, &nonces, n, &nw, "nonces") < 0)
        goto done;
    if (get_rows(ao, &aads, n, &aw, "aads") < 0)
        goto done;
    const int64_t *cl = lens.buf;
    int64_t t = self->tag_bytes, total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (cl[i] < 0 || cl[i] > 0xFFFFF || ct_at + cl[i] + t > (int64_t)pv.views[i].len) {
            PyErr_Format(PyExc_ValueError, "packet %zd: %lld bytes of cipher text from byte "
                         "%zd and a %lld-byte tag do not fit its %zd bytes", i,
                         (long long)cl[i], ct_at, (long long)t, pv.views[i].len);
            goto done;
        }
        total += cl[i];
    }
    verdicts = PyBytes_FromStringAndSize(NULL, n);
    plain = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (verdicts == NULL || plain == NULL)
        goto done;
    uint8_t *v = (uint8_t *)PyBytes_AS_STRING(verdicts), *p = (uint8_t *)PyBytes_AS_STRING(plain);
    const uint8_t *nb = nonces.buf, *ab = aads.buf;
    Py_BEGIN_ALLOW_THREADS
    uint8_t tag[32];
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *c = (const uint8_t *)pv.views[i].buf + ct_at;
        aead_one(mgr, self, 0, nb + 12 * i, c, p, (uint64_t)cl[i], ab + aw * i, (uint64_t)aw, tag);
        v[i] = !ct_diff(tag, c + cl[i], (size_t)t);
        p += cl[i];
    }
    Py_END_ALLOW_THREADS
    result = PyTuple_Pack(2, verdicts, plain);
done:
    Py_XDECREF(verdicts);
    Py_XDECREF(plain);
    release_views(&pv);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&nonces);
    PyBuffer_Release(&aads);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* Fused ESP tunnel mode for an AEAD with an 8-byte IV (AES-GCM, ChaCha20-Poly1305)          */
/*
 * One call frames and seals (or checks and opens) a whole batch: the per-packet header fields
 * the core would otherwise compute with a dozen numpy operations per batch are written here,
 * from a template the core builds once per SA (outer IPv4/IPv6 header, UDP header for
 * ESP-in-UDP, SPI; every field no packet changes).  The rules are those of
 * ipsec_core.dataplane.esp.bulk, which stays the reference (and the path for every backend
 * without these calls): a packet these rules do not cover ("odd") is never touched here, and
 * the core hands it to the one-by-one engine.  tests/dataplane/test_batch_buffer.py and
 * tests/crypto/test_ipsecmb.py check the bytes, verdicts, counters and replay window against
 * one-by-one processing, and fuzz these entry points under AddressSanitizer.
 *
 * Template: outer (20 or 40) [+ 8 UDP] + 8 ESP header + 8 IV bytes; flags: FUSED_V6 (outer
 * IPv6), FUSED_UDP (ESP in UDP), FUSED_ESN (64-bit sequence numbers in the AAD), FUSED_BARE
 * (the packets are the ESP part alone, SPI first, as a UDP socket sends and receives them:
 * the template is the 16 ESP header and IV bytes, no outer header is written or checked, the
 * outer ECN field counts as Not-ECT; V6 and UDP still give the size limit).
 */
#define FUSED_V6 1
#define FUSED_UDP 2
#define FUSED_ESN 4
#define FUSED_BARE 8      /* packets are ESP only (SPI first), as a UDP socket sends them */
#define FUSED_MAX 65535

typedef struct {
    Py_buffer tmpl;
    const uint8_t *t;
    int flags, outer, udp, esp_at, head, block;
    int ivb;              /* IV bytes: 8 (AEAD, counter mode) or 16 (CBC) */
    int real_outer;       /* outer IP + UDP bytes of the packet on the wire (size limit) */
    uint8_t salt[4];
} fused_spec;

static inline void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline unsigned get16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xFFFF); }
static inline void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }

static int
spec_get(PyObject *tmpl, int flags, PyObject *salt, int block, int ivb, fused_spec *s)
{
    Py_buffer sv = {0};
    memset(s, 0, sizeof *s);
    if (flags & ~(FUSED_V6 | FUSED_UDP | FUSED_ESN | FUSED_BARE)) {
        PyErr_Format(PyExc_ValueError, "unknown flags 0x%x", flags);
        return -1;
    }
    if (block < 1 || block > 255) {
        PyErr_Format(PyExc_ValueError, "block must be 1..255 bytes, not %d", block);
        return -1;
    }
    s->flags = flags;
    s->block = block;
    s->outer = flags & FUSED_V6 ? 40 : 20;
    s->udp = flags & FUSED_UDP ? 8 : 0;
    s->real_outer = (flags & FUSED_V6 ? 0 : 20) + s->udp;
    if (flags & FUSED_BARE)
        s->outer = s->udp = 0;
    s->esp_at = s->outer + s->udp;
    s->ivb = ivb;
    s->head = s->esp_at + 8 + ivb;
    if (PyObject_GetBuffer(salt, &sv, PyBUF_SIMPLE) < 0)
        return -1;
    if (sv.len != (ivb == 8 ? 4 : 0)) {
        PyErr_Format(PyExc_ValueError, "salt must be %d bytes, not %zd", ivb == 8 ? 4 : 0, sv.len);
        PyBuffer_Release(&sv);
        return -1;
    }
    memcpy(s->salt, sv.buf, (size_t)sv.len);
    PyBuffer_Release(&sv);
    if (PyObject_GetBuffer(tmpl, &s->tmpl, PyBUF_SIMPLE) < 0)
        return -1;
    if (s->tmpl.len != s->head) {
        PyErr_Format(PyExc_ValueError, "template must be %d bytes for flags 0x%x, not %zd",
                     s->head, flags, s->tmpl.len);
        PyBuffer_Release(&s->tmpl);
        return -1;
    }
    s->t = s->tmpl.buf;
    return 0;
}

/* Pad bytes and the ESP length of an inner packet of `len` bytes. */
static inline int64_t
fused_pad(const fused_spec *s, int64_t len)
{
    return (s->block - (len + 2) % s->block) % s->block;
}

/* Whether the bulk path frames this inner packet itself (else: the engine): IPv4 whose header
 * adds up, or IPv6; at least 8 bytes; the outer packet within 65535 bytes.  Fills tos, the
 * outer DF bit and the next header. */
static int
fused_inner(const fused_spec *s, const uint8_t *p, int64_t len, int icv, int *tos, unsigned *df,
            uint8_t *nh, int64_t *wire)
{
    if (len < 8 || len > FUSED_MAX)
        return 0;
    int v = p[0] >> 4;
    if (v == 4) {
        int64_t ihl = (int64_t)(p[0] & 15) * 4, tot = get16(p + 2);
        if (len < 20 || ihl < 20 || tot < ihl || tot > len)
            return 0;
        *tos = p[1];
        *df = (p[6] & 0x40) ? 0x4000 : 0;
        *nh = 4;
    } else if (v == 6) {
        *tos = (p[0] & 15) << 4 | p[1] >> 4;
        *df = 0;
        *nh = 41;
    } else {
        return 0;
    }
    int64_t esp_len = 8 + s->ivb + len + fused_pad(s, len) + 2 + icv;
    if (s->real_outer + esp_len > 0xFFFF)
        return 0;
    *wire = s->esp_at + esp_len;
    return 1;
}

/* RFC 1071 sum of len bytes in network order, folded to 16 bits (not complemented). */
static unsigned
csum16(const uint8_t *p, int64_t len)
{
    uint64_t sum = 0;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {          /* native words: the sum is order independent */
        uint64_t w;
        memcpy(&w, p + i, 8);
        sum += (w & 0xFFFFFFFFu) + (w >> 32);
    }
    for (; i + 2 <= len; i += 2) {
        uint16_t w;
        memcpy(&w, p + i, 2);
        sum += w;
    }
    if (i < len) {                          /* the odd last byte, padded with a zero byte */
        uint16_t w = 0;
        memcpy(&w, p + i, 1);
        sum += w;
    }
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    uint16_t folded = (uint16_t)sum, net;
    uint8_t b[2];
    memcpy(b, &folded, 2);                  /* back to network order */
    net = (uint16_t)(b[0] << 8 | b[1]);
    return net;
}

/* Checksum offload (virtio NEEDS_CSUM, Linux CHECKSUM_PARTIAL): the field at start + offset
 * holds the pseudo-header sum; the sum from `start` to the end goes there, complemented. */
static void
complete_csum(uint8_t *p, int64_t len, int64_t start, int64_t offset)
{
    if (start < 0 || start + offset + 2 > len)
        return;
    unsigned c = ~csum16(p + start, len - start) & 0xFFFF;
    if (c == 0 && offset == 6)              /* UDP: zero means "no checksum" */
        c = 0xFFFF;
    put16(p + start + offset, c);
}

/* Frame the inner packet already at h + head (len bytes): outer header, ESP header, IV (the
 * sequence number, or the 16 bytes at cbc_iv), trailer; returns the payload bytes to
 * encrypt (packet, padding, pad length, next header). */
static int64_t
fused_frame_one(const fused_spec *s, uint8_t *h, int64_t len, int icv, int tos, unsigned df,
                uint8_t nh, uint64_t seq, unsigned ident, const uint8_t *cbc_iv)
{
    int64_t pad = fused_pad(s, len);
    int64_t esp_len = 8 + s->ivb + len + pad + 2 + icv;
    memcpy(h, s->t, (size_t)s->head);
    if (s->flags & FUSED_BARE) {
        ;
    } else if (s->flags & FUSED_V6) {
        put32(h, (6u << 28) | ((uint32_t)tos << 20));
        put16(h + 4, (unsigned)(s->udp + esp_len));
    } else {
        h[1] = (uint8_t)tos;
        put16(h + 2, (unsigned)(20 + s->udp + esp_len));
        put16(h + 4, ident);
        put16(h + 6, df);
        h[10] = h[11] = 0;
        uint32_t sum = 0;
        for (int k = 0; k < 20; k += 2)
            sum += get16(h + k);
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        put16(h + 10, ~sum & 0xFFFF);
    }
    if (s->udp)
        put16(h + s->outer + 4, (unsigned)(8 + esp_len));
    uint8_t *esp = h + s->esp_at;
    put32(esp + 4, (uint32_t)seq);
    if (s->ivb == 16)
        memcpy(esp + 8, cbc_iv, 16);
    else
        put64(esp + 8, seq);
    uint8_t *pt = h + s->head;
    for (int64_t k = 0; k < pad; k++)
        pt[len + k] = (uint8_t)(k + 1);
    pt[len + pad] = (uint8_t)pad;
    pt[len + pad + 1] = nh;
    return len + pad + 2;
}

/* Frame and seal the inner packet already at h + head (len bytes): header, trailer, tag. */
static void
fused_seal_one(IMB_MGR *mgr, const AeadObject *a, const fused_spec *s, uint8_t *h, int64_t len,
               int tos, unsigned df, uint8_t nh, uint64_t seq, unsigned ident)
{
    int64_t icv = a->tag_bytes;
    int64_t plen = fused_frame_one(s, h, len, (int)icv, tos, df, nh, seq, ident, NULL);
    uint8_t *esp = h + s->esp_at, *pt = h + s->head;
    uint8_t nonce[12], aad[12], tag[32];
    memcpy(nonce, s->salt, 4);
    memcpy(nonce + 4, esp + 8, 8);
    uint64_t aad_len = 8;
    if (s->flags & FUSED_ESN) {
        memcpy(aad, esp, 4);
        put64(aad + 4, seq);
        aad_len = 12;
    } else {
        memcpy(aad, esp, 8);
    }
    aead_one(mgr, a, 1, nonce, pt, pt, (uint64_t)plen, aad, aad_len, tag);
    memcpy(pt + plen, tag, (size_t)icv);
}

/* esp_protect_into's buffer arguments: a writable buffer, int64 offsets and lengths (*n of
 * them), every packet with `head` bytes of room before it inside the buffer, and sequence
 * numbers seq0 + 1 .. seq0 + n that do not wrap.  The views are the caller's to release. */
static int
protect_into_args(PyObject *bo, PyObject *oo, PyObject *lo, Py_buffer *buf, Py_buffer *offs,
                  Py_buffer *lens, Py_ssize_t *n, int head, unsigned long long seq0)
{
    if (PyObject_GetBuffer(bo, buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (get_i64(oo, offs, n, "offsets") < 0 || get_i64(lo, lens, n, "lengths") < 0)
        return -1;
    if (*n > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "a batch takes at most %d messages, not %zd", MAX_BATCH, *n);
        return -1;
    }
    if (check_regions(offs->buf, lens->buf, *n, buf->len, -head, 0, 0, FUSED_MAX, "packet") < 0)
        return -1;
    if (seq0 > UINT64_MAX - (uint64_t)*n - 1) {
        PyErr_SetString(PyExc_ValueError, "sequence numbers would wrap");
        return -1;
    }
    return 0;
}

/* esp_protect_into's pass before any byte is written: per packet tos[2i] (TOS) and tos[2i+1]
 * (DF | next header << 16), w[i] its ESP packet's length, the inner bytes summed.  Returns
 * -1 when every packet is framed here, the index of the first one left to the engine, or -2
 * with a ValueError set when a packet's ESP form would not fit the buffer. */
static Py_ssize_t
fused_prepass(const fused_spec *s, const uint8_t *base, const int64_t *off, const int64_t *len,
              Py_ssize_t n, int icv, Py_ssize_t buf_len, int *tos, int64_t *w,
              long long *inner_bytes)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned df;
        uint8_t nh;
        if (!fused_inner(s, base + off[i], len[i], icv, &tos[2 * i], &df, &nh, &w[i]))
            return i;
        if ((uint64_t)off[i] - (uint64_t)s->head + (uint64_t)w[i] > (uint64_t)buf_len) {
            PyErr_Format(PyExc_ValueError, "packet %zd: its %lld-byte ESP packet from byte %lld "
                         "does not fit the %zd-byte buffer (too little room after it)", i,
                         (long long)w[i], (long long)(off[i] - s->head), buf_len);
            return -2;
        }
        tos[2 * i + 1] = (int)(df | (unsigned)nh << 16);
        *inner_bytes += len[i];
    }
    return -1;
}

/* Aead.esp_protect(packets, template, flags, salt, block, seq0, ident0)
 *   -> (list of ESP packets, inner bytes), or the index of the first packet it leaves to the
 *   engine (then nothing was computed).  Packet i gets sequence number seq0 + 1 + i and, in
 *   an outer IPv4 header, ID (ident0 + 1 + i) mod 2^16. */
static PyObject *
aead_esp_protect(AeadObject *self, PyObject *args)
{
    PyObject *po, *to, *so, *out = NULL, *result = NULL;
    int flags, block;
    unsigned long long seq0;
    unsigned int ident0;
    fused_spec s = {0};
    packet_views pv = {0};
    int *tos = NULL;
    if (!PyArg_ParseTuple(args, "O!OiOiKI:esp_protect", &PyList_Type, &po, &to, &flags, &so,
                          &block, &seq0, &ident0))
        return NULL;
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL || spec_get(to, flags, so, block, 8, &s) < 0)
        return NULL;
    if (get_views(po, &pv) < 0)
        goto done;
    Py_ssize_t n = pv.n;
    if (seq0 > UINT64_MAX - (uint64_t)n - 1) {
        PyErr_SetString(PyExc_ValueError, "sequence numbers would wrap");
        goto done;
    }
    tos = PyMem_Malloc(n ? (size_t)n * 2 * sizeof(int) : 1);
    if (tos == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    long long inner_bytes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *p = pv.views[i].buf;
        int64_t len = pv.views[i].len, wire;
        unsigned df;
        uint8_t nh;
        if (!fused_inner(&s, p, len, self->tag_bytes, &tos[2 * i], &df, &nh, &wire)) {
            result = PyLong_FromSsize_t(i);
            goto done;
        }
        tos[2 * i + 1] = (int)(df | (unsigned)nh << 16);
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)wire);
        if (b == NULL)
            goto done;
        PyList_SET_ITEM(out, i, b);
        memcpy(PyBytes_AS_STRING(b) + s.head, p, (size_t)len);
        inner_bytes += len;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *h = (uint8_t *)PyBytes_AS_STRING(PyList_GET_ITEM(out, i));
        fused_seal_one(mgr, self, &s, h, pv.views[i].len, tos[2 * i], tos[2 * i + 1] & 0xFFFF,
                       (uint8_t)(tos[2 * i + 1] >> 16), seq0 + 1 + (uint64_t)i,
                       (ident0 + 1 + (unsigned)i) & 0xFFFF);
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OL)", out, inner_bytes);
done:
    Py_XDECREF(out);
    PyMem_Free(tos);
    release_views(&pv);
    PyBuffer_Release(&s.tmpl);
    return result;
}

/* Aead.esp_protect_into(buf, offsets, lengths, template, flags, salt, block, seq0, ident0
 *                       [, csum_start, csum_offset])
 *   -> (int64 wire lengths, inner bytes), or the index of the first packet it leaves to the
 *   engine (then nothing was written).  In place: packet i's header goes into the `head`
 *   bytes before offsets[i], its trailer and tag after it; the ESP packet starts at
 *   offsets[i] - head.  Every region is checked against the buffer first.  With csum_start
 *   >= 0, each inner packet's checksum is completed first (checksum offload, as a NIC does
 *   with TSO: the field at csum_start + csum_offset holds the pseudo-header sum). */
static PyObject *
aead_esp_protect_into(AeadObject *self, PyObject *args)
{
    PyObject *bo, *oo, *lo, *to, *so, *wl = NULL, *result = NULL;
    int flags, block;
    unsigned long long seq0;
    unsigned int ident0;
    Py_ssize_t cs_start = -1, cs_off = 0;
    fused_spec s = {0};
    Py_buffer buf = {0}, offs = {0}, lens = {0};
    int *tos = NULL;
    if (!PyArg_ParseTuple(args, "OOOOiOiKI|nn:esp_protect_into", &bo, &oo, &lo, &to, &flags, &so,
                          &block, &seq0, &ident0, &cs_start, &cs_off))
        return NULL;
    if (cs_start > FUSED_MAX || cs_off < 0 || cs_off > 64) {
        PyErr_Format(PyExc_ValueError, "checksum at %zd + %zd is out of range", cs_start, cs_off);
        return NULL;
    }
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL || spec_get(to, flags, so, block, 8, &s) < 0)
        return NULL;
    Py_ssize_t n = -1;
    if (protect_into_args(bo, oo, lo, &buf, &offs, &lens, &n, s.head, seq0) < 0)
        goto done;
    const int64_t *off = offs.buf, *len = lens.buf;
    const uint8_t *base = buf.buf;
    tos = PyMem_Malloc(n ? (size_t)n * 2 * sizeof(int) : 1);
    wl = PyBytes_FromStringAndSize(NULL, n * 8);
    if (tos == NULL || wl == NULL) {
        if (tos == NULL)
            PyErr_NoMemory();
        goto done;
    }
    int64_t *w = (int64_t *)PyBytes_AS_STRING(wl);
    long long inner_bytes = 0;
    Py_ssize_t odd = fused_prepass(&s, base, off, len, n, self->tag_bytes, buf.len, tos, w,
                                   &inner_bytes);
    if (odd != -1) {
        if (odd >= 0)
            result = PyLong_FromSsize_t(odd);
        goto done;
    }
    uint8_t *wb = buf.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (cs_start >= 0)
            complete_csum(wb + off[i], len[i], cs_start, cs_off);
        fused_seal_one(mgr, self, &s, wb + off[i] - s.head, len[i], tos[2 * i],
                       tos[2 * i + 1] & 0xFFFF, (uint8_t)(tos[2 * i + 1] >> 16),
                       seq0 + 1 + (uint64_t)i, (ident0 + 1 + (unsigned)i) & 0xFFFF);
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(OL)", wl, inner_bytes);
done:
    Py_XDECREF(wl);
    PyMem_Free(tos);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&s.tmpl);
    return result;
}

/* The received packet's outer header, UDP port, SPI and length as the bulk path accepts them
 * (anything else is odd: the engine decides). */
static int
fused_outer_ok(const fused_spec *s, const uint8_t *p, int64_t len, int64_t min_len)
{
    if (len < min_len || len > FUSED_MAX)
        return 0;
    if (s->flags & FUSED_BARE) {
        ;
    } else if (s->flags & FUSED_V6) {
        if (p[0] >> 4 != 6 || (int64_t)get16(p + 4) + 40 != len || p[6] != s->t[6])
            return 0;
    } else {
        if (p[0] != 0x45 || (int64_t)get16(p + 2) != len || (get16(p + 6) & 0x3FFF)
                || p[9] != s->t[9])
            return 0;
    }
    if (s->udp && get16(p + s->outer + 2) != get16(s->t + s->outer + 2))
        return 0;
    return memcmp(p + s->esp_at, s->t + s->esp_at, 4) == 0;
}

/* The decrypted payload pt (ct bytes) as the bulk path accepts it: padding 1, 2, ... of at
 * most 15 bytes, an IPv4 or IPv6 packet that fits, and an ECN pair that passes unchanged
 * (RFC 6040 4.2); its inner length, or -1 (odd: the engine decides). */
static int64_t
fused_inner_ok(const uint8_t *outer, int v6, const uint8_t *pt, int64_t ct)  /* outer NULL: Not-ECT */
{
    if (ct < 2)
        return -1;
    int64_t pad = pt[ct - 2], body = ct - 2 - pad;
    uint8_t nh = pt[ct - 1];
    if (pad > 15 || body < 0)
        return -1;
    for (int64_t k = 0; k < pad; k++)
        if (pt[body + k] != (uint8_t)(k + 1))
            return -1;
    int64_t inner;
    int iecn;
    if (nh == 4 && body >= 20 && pt[0] >> 4 == 4) {
        int64_t ihl = (int64_t)(pt[0] & 15) * 4, tot = get16(pt + 2);
        if (ihl < 20 || tot < ihl || tot > body)
            return -1;
        inner = tot;
        iecn = pt[1] & 3;
    } else if (nh == 41 && body >= 40 && pt[0] >> 4 == 6) {
        inner = 40 + (int64_t)get16(pt + 4);
        if (inner > body)
            return -1;
        iecn = (pt[1] >> 4) & 3;
    } else {
        return -1;
    }
    int oecn = outer == NULL ? 0 : v6 ? (outer[1] >> 4) & 3 : outer[1] & 3;
    if ((oecn == 3 && iecn != 3) || (iecn == 2 && oecn == 1))
        return -1;
    return inner;
}

/* The state both esp_unprotect calls share: arguments, the packets (a list, or a buffer with
 * offsets and lengths), the run of packets whose outer header the bulk path takes, and the
 * results being filled. */
typedef struct {
    fused_spec s;
    packet_views pv;
    Py_buffer buf, offs, lens;
    const uint8_t **ptr;
    int64_t *plen;
    Py_ssize_t n, m;
    int listed, icv;
    unsigned long long top, window;
    PyObject *codes, *seqs, *plain, *iat, *ilen;
    uint8_t *cd, *pl;
    int64_t *sq, *ia, *il;
} unprot;

static void
unprot_release(unprot *u)
{
    Py_CLEAR(u->codes);
    Py_CLEAR(u->seqs);
    Py_CLEAR(u->plain);
    Py_CLEAR(u->iat);
    Py_CLEAR(u->ilen);
    PyMem_Free(u->ptr);
    PyMem_Free(u->plen);
    u->ptr = NULL;
    u->plen = NULL;
    release_views(&u->pv);
    PyBuffer_Release(&u->buf);
    PyBuffer_Release(&u->offs);
    PyBuffer_Release(&u->lens);
    PyBuffer_Release(&u->s.tmpl);
}

/* Parse (packets | buf, offsets, lengths, template, flags, salt, top, window, min_len), find
 * the run of packets from the first whose outer header, SPI and length the bulk path takes
 * (cipher text whole `cblock`-byte blocks), and allocate the results for them. */
static int
unprot_begin(unprot *u, PyObject *args, int icv, int ivb, int cblock)
{
    PyObject *src, *oo, *lo, *to, *so;
    int flags;
    Py_ssize_t min_len;
    memset(u, 0, sizeof *u);
    u->icv = icv;
    if (!PyArg_ParseTuple(args, "OOOOiOKKn:esp_unprotect", &src, &oo, &lo, &to, &flags, &so,
                          &u->top, &u->window, &min_len))
        return -1;
    if (spec_get(to, flags, so, 4, ivb, &u->s) < 0)
        return -1;
    if (u->top >= ((uint64_t)1 << 62) || u->window > ((uint64_t)1 << 31)) {
        PyErr_Format(PyExc_ValueError, "top %llu / window %llu out of range", u->top, u->window);
        return -1;
    }
    if (min_len < u->s.head + icv + 2 || min_len > FUSED_MAX) {
        PyErr_Format(PyExc_ValueError, "min_len must be %d..%d, not %zd", u->s.head + icv + 2,
                     FUSED_MAX, min_len);
        return -1;
    }
    Py_ssize_t n = -1;
    u->listed = oo == Py_None;
    if (u->listed) {
        if (lo != Py_None) {
            PyErr_SetString(PyExc_TypeError, "lengths must be None when offsets is");
            return -1;
        }
        if (get_views(src, &u->pv) < 0)
            return -1;
        n = u->pv.n;
    } else {
        if (PyObject_GetBuffer(src, &u->buf, PyBUF_C_CONTIGUOUS) < 0)
            return -1;
        if (get_i64(oo, &u->offs, &n, "offsets") < 0 || get_i64(lo, &u->lens, &n, "lengths") < 0)
            return -1;
        if (n > MAX_BATCH) {
            PyErr_Format(PyExc_ValueError, "a batch takes at most %d messages, not %zd",
                         MAX_BATCH, n);
            return -1;
        }
        if (check_regions(u->offs.buf, u->lens.buf, n, u->buf.len, 0, 0, 0, INT64_MAX / 4,
                          "packet") < 0)
            return -1;
    }
    u->n = n;
    u->ptr = PyMem_Malloc(n ? (size_t)n * sizeof *u->ptr : 1);
    u->plen = PyMem_Malloc(n ? (size_t)n * sizeof *u->plen : 1);
    if (u->ptr == NULL || u->plen == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    const fused_spec *s = &u->s;
    Py_ssize_t m = 0;
    int64_t total = 0;
    for (; m < n; m++) {
        const uint8_t *p;
        int64_t l;
        if (u->listed) {
            p = u->pv.views[m].buf;
            l = u->pv.views[m].len;
        } else {
            p = (const uint8_t *)u->buf.buf + ((const int64_t *)u->offs.buf)[m];
            l = ((const int64_t *)u->lens.buf)[m];
        }
        if (!fused_outer_ok(s, p, l, min_len) || (l - s->head - icv) % cblock)
            break;
        if ((s->flags & FUSED_ESN) && get16(p + s->esp_at + 4) * 65536ULL + get16(p + s->esp_at + 6)
                >= ((uint64_t)1 << 32) - u->window)
            break;
        u->ptr[m] = p;
        u->plen[m] = l;
        total += l - s->head - icv;
    }
    u->m = m;
    u->codes = PyBytes_FromStringAndSize(NULL, m);
    u->seqs = PyBytes_FromStringAndSize(NULL, m * 8);
    u->plain = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    u->iat = PyBytes_FromStringAndSize(NULL, m * 8);
    u->ilen = PyBytes_FromStringAndSize(NULL, m * 8);
    if (!u->codes || !u->seqs || !u->plain || !u->iat || !u->ilen)
        return -1;
    u->cd = (uint8_t *)PyBytes_AS_STRING(u->codes);
    u->sq = (int64_t *)PyBytes_AS_STRING(u->seqs);
    u->ia = (int64_t *)PyBytes_AS_STRING(u->iat);
    u->il = (int64_t *)PyBytes_AS_STRING(u->ilen);
    u->pl = (uint8_t *)PyBytes_AS_STRING(u->plain);
    int64_t at = 0;
    for (Py_ssize_t i = 0; i < m; i++) {       /* where each plaintext goes in `plain` */
        u->ia[i] = at;
        at += u->plen[i] - s->head - icv;
    }
    return 0;
}

/* Packet i's full sequence number (ESN: the window's high half). */
static inline uint64_t
unprot_seq(const unprot *u, Py_ssize_t i)
{
    const uint8_t *esp = u->ptr[i] + u->s.esp_at;
    uint64_t low = (uint64_t)get16(esp + 4) << 16 | get16(esp + 6);
    return (u->s.flags & FUSED_ESN) ? ((u->top >> 32) << 32) + low : low;
}

/* The verdict on packet i once opened (auth_ok: its ICV verified): 1 accepted (the running
 * top of the window and the counts move), 0 dropped (bad ICV), -1 left to the engine (stop
 * here). */
static int
unprot_judge(unprot *u, Py_ssize_t i, int auth_ok, uint64_t full, uint64_t *running,
             Py_ssize_t *accepted, long long *inner_bytes)
{
    int64_t ct = u->plen[i] - u->s.head - u->icv;
    u->sq[i] = (int64_t)full;
    if (!auth_ok) {
        u->cd[i] = 1;
        u->il[i] = 0;
        return 0;
    }
    int64_t inner = fused_inner_ok((u->s.flags & FUSED_BARE) ? NULL : u->ptr[i],
                                   u->s.flags & FUSED_V6, u->pl + u->ia[i], ct);
    if (inner < 0)
        return -1;
    u->cd[i] = 0;
    u->il[i] = inner;
    *inner_bytes += inner;
    *running = full;
    (*accepted)++;
    return 1;
}

/* (stop, codes, seqs, plain, inner_at, inner_len, accepted, inner_bytes, inners) */
static PyObject *
unprot_finish(unprot *u, Py_ssize_t stop, Py_ssize_t accepted, long long inner_bytes)
{
    PyObject *inners = NULL, *result = NULL;
    if (stop < u->m) {
        if (_PyBytes_Resize(&u->codes, stop) < 0 || _PyBytes_Resize(&u->seqs, stop * 8) < 0
                || _PyBytes_Resize(&u->iat, stop * 8) < 0 || _PyBytes_Resize(&u->ilen, stop * 8) < 0)
            return NULL;
        u->cd = (uint8_t *)PyBytes_AS_STRING(u->codes);
        u->ia = (int64_t *)PyBytes_AS_STRING(u->iat);
        u->il = (int64_t *)PyBytes_AS_STRING(u->ilen);
    }
    if (u->listed) {
        inners = PyList_New(stop);
        if (inners == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < stop; i++) {
            PyObject *b;
            if (u->cd[i]) {
                b = Py_None;
                Py_INCREF(b);
            } else {
                b = PyBytes_FromStringAndSize((const char *)u->pl + u->ia[i], (Py_ssize_t)u->il[i]);
                if (b == NULL) {
                    Py_DECREF(inners);
                    return NULL;
                }
            }
            PyList_SET_ITEM(inners, i, b);
        }
    } else {
        inners = Py_None;
        Py_INCREF(inners);
    }
    result = Py_BuildValue("(nOOOOOnLO)", stop, u->codes, u->seqs, u->plain, u->iat, u->ilen,
                           accepted, inner_bytes, inners);
    Py_DECREF(inners);
    return result;
}

/* Aead.esp_unprotect(packets | buf, offsets, lengths, template, flags, salt, top, window,
 *                    min_len)
 *   -> (stop, codes, seqs, plain, inner_at, inner_len, accepted, inner_bytes, inners)
 * From the first packet on, while each is one the bulk path covers and its sequence number
 * is right of the window and of every packet accepted before it in this call: open it out of
 * place into `plain` (the plaintexts back to back).  `stop` is the index of the first packet
 * left to the engine (n when none is): nothing at or after it was accepted.  For the `stop`
 * packets before it: codes (1 byte each: 0 accepted, 1 the tag did not verify), seqs (int64,
 * the full sequence number), inner_at / inner_len (int64: the inner packet in `plain`; length
 * 0 where the tag failed).  With a list of packets (offsets and lengths None), `inners` is the
 * list of accepted inner packets as bytes and None where the tag failed; else None.
 * The caller moves the replay window over the accepted sequence numbers. */
static PyObject *
aead_esp_unprotect(AeadObject *self, PyObject *args)
{
    unprot u;
    PyObject *result = NULL;
    if (self->key == NULL) {
        PyErr_SetString(PyExc_ValueError, "Aead not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (unprot_begin(&u, args, self->tag_bytes, 8, 1) < 0)
        goto done;
    Py_ssize_t stop = u.m, accepted = 0;
    long long inner_bytes = 0;
    int esn = u.s.flags & FUSED_ESN;
    Py_BEGIN_ALLOW_THREADS
    uint64_t running = u.top;
    uint8_t nonce[12], aad[12], tag[32];
    memcpy(nonce, u.s.salt, 4);
    for (Py_ssize_t i = 0; i < u.m; i++) {
        const uint8_t *p = u.ptr[i], *esp = p + u.s.esp_at;
        uint64_t full = unprot_seq(&u, i);
        if (full <= running) {
            stop = i;
            break;
        }
        int64_t ct = u.plen[i] - u.s.head - u.icv;
        memcpy(nonce + 4, esp + 8, 8);
        uint64_t aad_len = 8;
        if (esn) {
            memcpy(aad, esp, 4);
            put64(aad + 4, full);
            aad_len = 12;
        } else {
            memcpy(aad, esp, 8);
        }
        aead_one(mgr, self, 0, nonce, p + u.s.head, u.pl + u.ia[i], (uint64_t)ct, aad, aad_len, tag);
        if (unprot_judge(&u, i, !ct_diff(tag, p + u.s.head + ct, (size_t)u.icv), full, &running,
                         &accepted, &inner_bytes) < 0) {
            stop = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    result = unprot_finish(&u, stop, accepted, inner_bytes);
done:
    unprot_release(&u);
    return result;
}

/* The batch objects carry peek and cut too, so the core reaches them through the object it
 * already holds (ipsec_core.dataplane.esp.bulk.EspFraming). */
static PyObject *obj_peek(PyObject *s, PyObject *a) { return mod_peek(NULL, a); }
static PyObject *obj_cut(PyObject *s, PyObject *a) { return mod_cut(NULL, a); }

static PyObject *aead_seal_batch(AeadObject *s, PyObject *a) { return aead_batch(s, a, 1); }
static PyObject *aead_open_batch(AeadObject *s, PyObject *a) { return aead_batch(s, a, 0); }

static PyMethodDef aead_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))aead_encrypt, METH_FASTCALL,
     "encrypt(nonce, plaintext, aad) -> ciphertext || tag"},
    {"decrypt", (PyCFunction)(void (*)(void))aead_decrypt, METH_FASTCALL,
     "decrypt(nonce, ciphertext_and_tag, aad) -> plaintext; raises auth_error on a bad tag"},
    {"seal_batch", (PyCFunction)aead_seal_batch, METH_VARARGS,
     "seal_batch(buf, offsets, lengths, nonces, aads): encrypt in place, tags after each message"},
    {"open_batch", (PyCFunction)aead_open_batch, METH_VARARGS,
     "open_batch(buf, offsets, lengths, nonces, aads) -> verdict bytes (1 = tag verifies)"},
    {"esp_seal", (PyCFunction)aead_esp_seal, METH_VARARGS,
     "esp_seal(packets, heads, head_len, nhs, block, nonces, aads) -> [framed, sealed bytes]"},
    {"esp_open", (PyCFunction)aead_esp_open, METH_VARARGS,
     "esp_open(packets, ct_at, ct_lengths, nonces, aads) -> (verdicts, plaintexts)"},
    {"esp_protect", (PyCFunction)aead_esp_protect, METH_VARARGS,
     "esp_protect(packets, template, flags, salt, block, seq0, ident0) -> (ESP packets, "
     "inner bytes) | index of the first packet left to the engine"},
    {"esp_protect_into", (PyCFunction)aead_esp_protect_into, METH_VARARGS,
     "esp_protect_into(buf, offsets, lengths, template, flags, salt, block, seq0, ident0) -> "
     "(wire lengths, inner bytes) | index of the first packet left to the engine"},
    {"esp_unprotect", (PyCFunction)aead_esp_unprotect, METH_VARARGS,
     "esp_unprotect(packets | buf, offsets, lengths, template, flags, salt, top, window, "
     "min_len) -> (stop, codes, seqs, plain, inner_at, inner_len, accepted, inner_bytes, inners)"},
    {"peek", (PyCFunction)obj_peek, METH_VARARGS, "peek(packets, k): see the module's peek"},
    {"cut", (PyCFunction)obj_cut, METH_VARARGS, "cut(buf, offsets, lengths): see the module's cut"},
    {NULL}
};

static PyObject *
aead_get_tag(AeadObject *self, void *c) { return PyLong_FromLong(self->tag_bytes); }

static PyGetSetDef aead_getset[] = {
    {"tag_bytes", (getter)aead_get_tag, NULL, "tag length in bytes", NULL},
    {NULL}
};

static PyTypeObject AeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipsec_plugins.ipsecmb._ipsecmb.Aead",
    .tp_basicsize = sizeof(AeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Aead(kind, key, tag_bytes, auth_error): AES-GCM or ChaCha20-Poly1305 on one key",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)aead_init,
    .tp_dealloc = (destructor)aead_dealloc,
    .tp_methods = aead_methods,
    .tp_getset = aead_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* Cipher (AES-CBC, AES-CTR)                                                               */

typedef struct {
    uint8_t enc[16 * 15];
    uint8_t dec[16 * 15];
} aes_keys;

typedef struct {
    PyObject_HEAD
    int kind;
    int key_len;
    aes_keys *keys;
} CipherObject;

static void
cipher_dealloc(CipherObject *self)
{
    wipe_free(self->keys, sizeof(aes_keys));
    self->keys = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
expand_aes(IMB_MGR *mgr, const uint8_t *key, Py_ssize_t len, aes_keys **out)
{
    if (len != 16 && len != 24 && len != 32) {
        PyErr_Format(PyExc_ValueError, "AES key must be 16, 24 or 32 bytes, not %zd", len);
        return -1;
    }
    aes_keys *k = aligned_key(sizeof(aes_keys));
    if (k == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (len == 16)
        IMB_AES_KEYEXP_128(mgr, key, k->enc, k->dec);
    else if (len == 24)
        IMB_AES_KEYEXP_192(mgr, key, k->enc, k->dec);
    else
        IMB_AES_KEYEXP_256(mgr, key, k->enc, k->dec);
    *out = k;
    return 0;
}

static int
cipher_init(CipherObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "key", NULL};
    int kind;
    Py_buffer key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iy*", kwlist, &kind, &key))
        return -1;
    int rc = -1;
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        goto out;
    if (self->keys != NULL) {
        PyErr_SetString(PyExc_TypeError, "Cipher is initialised once");
        goto out;
    }
    if (kind != K_CBC && kind != K_CTR) {
        PyErr_Format(PyExc_ValueError, "Cipher kind %d is not a cipher", kind);
        goto out;
    }
    if (expand_aes(mgr, key.buf, key.len, &self->keys) < 0)
        goto out;
    self->kind = kind;
    self->key_len = (int)key.len;
    rc = 0;
out:
    PyBuffer_Release(&key);
    return rc;
}

/* Fill the cipher part of a job. */
static void
cipher_job(IMB_JOB *job, const CipherObject *c, int enc, const uint8_t *iv)
{
    job->cipher_mode = c->kind == K_CBC ? IMB_CIPHER_CBC : IMB_CIPHER_CNTR;
    job->cipher_direction = (enc || c->kind == K_CTR) ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    job->enc_keys = c->keys->enc;
    job->dec_keys = c->keys->dec;
    job->key_len_in_bytes = (uint64_t)c->key_len;
    job->iv = iv;
    job->iv_len_in_bytes = 16;
}

/* Run one job to completion (the manager may hold others: none here, we flush). */
static int
run_one(IMB_MGR *mgr)
{
    int status = IMB_STATUS_COMPLETED;
    IMB_JOB *job = IMB_SUBMIT_JOB(mgr);
    while (job != NULL) {
        if (job->status != IMB_STATUS_COMPLETED)
            status = job->status;
        job = IMB_GET_COMPLETED_JOB(mgr);
    }
    while ((job = IMB_FLUSH_JOB(mgr)) != NULL)
        if (job->status != IMB_STATUS_COMPLETED)
            status = job->status;
    return status;
}

/* CTR over `len` bytes from the 16-byte counter block `iv`, carrying into all 128 bits: the
 * library counts in the low 32 bits only, so a run that would wrap them is split there. */
static int
ctr_crypt(IMB_MGR *mgr, const CipherObject *c, const uint8_t *iv, const uint8_t *src,
          uint8_t *dst, uint64_t len)
{
    uint8_t block[16];
    memcpy(block, iv, 16);
    while (len) {
        uint64_t low = 0;
        for (int i = 12; i < 16; i++)
            low = (low << 8) | block[i];
        uint64_t left = (UINT64_C(1) << 32) - low;  /* blocks before the low word wraps */
        uint64_t room = left > len / 16 ? len : left * 16;
        IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
        cipher_job(job, c, 1, block);
        job->hash_alg = IMB_AUTH_NULL;
        job->chain_order = IMB_ORDER_CIPHER_HASH;
        job->src = src;
        job->dst = dst;
        job->cipher_start_src_offset_in_bytes = 0;
        job->msg_len_to_cipher_in_bytes = room;
        if (run_one(mgr) != IMB_STATUS_COMPLETED)
            return -1;
        src += room;
        dst += room;
        len -= room;
        /* next counter block: the low word wrapped to 0, carry into the 96 bits above it */
        memset(block + 12, 0, 4);
        for (int i = 11; i >= 0 && ++block[i] == 0; i--)
            ;
    }
    return 0;
}

static PyObject *
cipher_crypt(CipherObject *self, PyObject *const *args, Py_ssize_t nargs, int enc)
{
    Py_buffer iv = {0}, data = {0};
    PyObject *out = NULL;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encrypt(iv, data) / decrypt(iv, data)");
        return NULL;
    }
    if (self->keys == NULL) {
        PyErr_SetString(PyExc_ValueError, "Cipher not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (PyObject_GetBuffer(args[0], &iv, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0)
        goto done;
    if (iv.len != 16) {
        PyErr_Format(PyExc_ValueError, "IV must be 16 bytes, not %zd", iv.len);
        goto done;
    }
    if (self->kind == K_CBC && data.len % 16) {
        PyErr_Format(PyExc_ValueError, "aes-cbc data must be a multiple of 16 bytes, not %zd",
                     data.len);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, data.len);
    if (out == NULL || data.len == 0)
        goto done;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (self->kind == K_CTR) {
        rc = ctr_crypt(mgr, self, iv.buf, data.buf, o, (uint64_t)data.len);
    } else {
        IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
        cipher_job(job, self, enc, iv.buf);
        job->hash_alg = IMB_AUTH_NULL;
        job->chain_order = enc ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
        job->src = data.buf;
        job->dst = o;
        job->cipher_start_src_offset_in_bytes = 0;
        job->msg_len_to_cipher_in_bytes = (uint64_t)data.len;
        rc = run_one(mgr) == IMB_STATUS_COMPLETED ? 0 : -1;
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(out);
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused the cipher job: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
    }
done:
    PyBuffer_Release(&iv);
    PyBuffer_Release(&data);
    return out;
}

static PyObject *cipher_encrypt(CipherObject *s, PyObject *const *a, Py_ssize_t n) { return cipher_crypt(s, a, n, 1); }
static PyObject *cipher_decrypt(CipherObject *s, PyObject *const *a, Py_ssize_t n) { return cipher_crypt(s, a, n, 0); }

static PyMethodDef cipher_methods[] = {
    {"encrypt", (PyCFunction)(void (*)(void))cipher_encrypt, METH_FASTCALL, "encrypt(iv, data)"},
    {"decrypt", (PyCFunction)(void (*)(void))cipher_decrypt, METH_FASTCALL, "decrypt(iv, data)"},
    {NULL}
};

static PyTypeObject CipherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipsec_plugins.ipsecmb._ipsecmb.Cipher",
    .tp_basicsize = sizeof(CipherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Cipher(kind, key): AES-CBC (no padding) or AES-CTR (16-byte counter block)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)cipher_init,
    .tp_dealloc = (destructor)cipher_dealloc,
    .tp_methods = cipher_methods,
};

/* ---------------------------------------------------------------------------------------- */
/* Mac                                                                                      */

typedef struct {
    uint8_t ipad[64];       /* HMAC: hashed key ^ ipad; CMAC: subkey 1; XCBC: k2 */
    uint8_t opad[64];       /* HMAC: hashed key ^ opad; CMAC: subkey 2; XCBC: k3 */
    uint8_t block_i[128];   /* HMAC: key ^ ipad, one block (the long-message path) */
    uint8_t block_o[128];
    aes_keys aes;           /* CMAC: the key's schedule; XCBC: k1's */
} mac_keys;

typedef struct {
    PyObject_HEAD
    int kind;
    int key_len;
    int digest;             /* full output bytes */
    int block;              /* HMAC block bytes */
    mac_keys *keys;
} MacObject;

static void
mac_dealloc(MacObject *self)
{
    wipe_free(self->keys, sizeof(mac_keys));
    self->keys = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static IMB_HASH_ALG
mac_alg(const MacObject *m)
{
    switch (m->kind) {
    case K_HMAC_SHA1: return IMB_AUTH_HMAC_SHA_1;
    case K_HMAC_SHA256: return IMB_AUTH_HMAC_SHA_256;
    case K_HMAC_SHA384: return IMB_AUTH_HMAC_SHA_384;
    case K_HMAC_SHA512: return IMB_AUTH_HMAC_SHA_512;
    case K_XCBC: return IMB_AUTH_AES_XCBC;
    default: return m->key_len == 32 ? IMB_AUTH_AES_CMAC_256 : IMB_AUTH_AES_CMAC;
    }
}

static void
plain_hash(IMB_MGR *mgr, int kind, const uint8_t *src, uint64_t len, uint8_t *out)
{
    switch (kind) {
    case K_HMAC_SHA1: IMB_SHA1(mgr, src, len, out); break;
    case K_HMAC_SHA256: IMB_SHA256(mgr, src, len, out); break;
    case K_HMAC_SHA384: IMB_SHA384(mgr, src, len, out); break;
    default: IMB_SHA512(mgr, src, len, out); break;
    }
}

static void
one_block(IMB_MGR *mgr, int kind, const uint8_t *src, uint8_t *out)
{
    switch (kind) {
    case K_HMAC_SHA1: IMB_SHA1_ONE_BLOCK(mgr, src, out); break;
    case K_HMAC_SHA256: IMB_SHA256_ONE_BLOCK(mgr, src, out); break;
    case K_HMAC_SHA384: IMB_SHA384_ONE_BLOCK(mgr, src, out); break;
    default: IMB_SHA512_ONE_BLOCK(mgr, src, out); break;
    }
}

static int
mac_init(MacObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "key", NULL};
    int kind;
    Py_buffer key;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iy*", kwlist, &kind, &key))
        return -1;
    int rc = -1;
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        goto out;
    if (self->keys != NULL) {
        PyErr_SetString(PyExc_TypeError, "Mac is initialised once");
        goto out;
    }
    mac_keys *k = aligned_key(sizeof(mac_keys));
    if (k == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    self->keys = k;
    self->kind = kind;
    self->key_len = (int)key.len;
    switch (kind) {
    case K_HMAC_SHA1: self->digest = 20; self->block = 64; break;
    case K_HMAC_SHA256: self->digest = 32; self->block = 64; break;
    case K_HMAC_SHA384: self->digest = 48; self->block = 128; break;
    case K_HMAC_SHA512: self->digest = 64; self->block = 128; break;
    case K_XCBC:
        if (key.len != 16) {
            PyErr_Format(PyExc_ValueError, "AES-XCBC-MAC takes a 16-byte key, not %zd", key.len);
            goto out;
        }
        self->digest = 16;
        IMB_AES_XCBC_KEYEXP(mgr, key.buf, k->aes.enc, k->ipad, k->opad);
        rc = 0;
        goto out;
    case K_CMAC:
        if (key.len != 16 && key.len != 32) {
            PyErr_Format(PyExc_ValueError, "aes-cmac here takes a 16- or 32-byte key, not %zd",
                         key.len);
            goto out;
        }
        self->digest = 16;
        if (key.len == 16) {
            IMB_AES_KEYEXP_128(mgr, key.buf, k->aes.enc, k->aes.dec);
            IMB_AES_CMAC_SUBKEY_GEN_128(mgr, k->aes.enc, k->ipad, k->opad);
        } else {
            IMB_AES_KEYEXP_256(mgr, key.buf, k->aes.enc, k->aes.dec);
            IMB_AES_CMAC_SUBKEY_GEN_256(mgr, k->aes.enc, k->ipad, k->opad);
        }
        rc = 0;
        goto out;
    default:
        PyErr_Format(PyExc_ValueError, "Mac kind %d is not a MAC", kind);
        goto out;
    }
    /* HMAC (RFC 2104): a key longer than a block is hashed first. */
    uint8_t kb[128] = {0};
    if (key.len > self->block)
        plain_hash(mgr, kind, key.buf, (uint64_t)key.len, kb);
    else
        memcpy(kb, key.buf, (size_t)key.len);
    for (int i = 0; i < self->block; i++) {
        k->block_i[i] = kb[i] ^ 0x36;
        k->block_o[i] = kb[i] ^ 0x5c;
    }
    explicit_bzero(kb, sizeof kb);
    one_block(mgr, kind, k->block_i, k->ipad);
    one_block(mgr, kind, k->block_o, k->opad);
    rc = 0;
out:
    PyBuffer_Release(&key);
    return rc;
}

/* Fill the hash part of a job (tag_len bytes of output at `tag`). */
static void
mac_job(IMB_JOB *job, const MacObject *m, uint8_t *tag, uint64_t tag_len)
{
    job->hash_alg = mac_alg(m);
    job->auth_tag_output = tag;
    job->auth_tag_output_len_in_bytes = tag_len;
    if (m->kind == K_XCBC) {
        job->u.XCBC._k1_expanded = (const uint32_t *)m->keys->aes.enc;
        job->u.XCBC._k2 = m->keys->ipad;
        job->u.XCBC._k3 = m->keys->opad;
    } else if (m->kind == K_CMAC) {
        job->u.CMAC._key_expanded = m->keys->aes.enc;
        job->u.CMAC._skey1 = m->keys->ipad;
        job->u.CMAC._skey2 = m->keys->opad;
    } else {
        job->u.HMAC._hashed_auth_key_xor_ipad = m->keys->ipad;
        job->u.HMAC._hashed_auth_key_xor_opad = m->keys->opad;
    }
}

/* The full MAC of one message into `out` (digest bytes).  Paths the job API does not take
 * (HMAC of nothing or of more than 65535 bytes, XCBC's full 16-byte output) are computed from
 * the one-shot hash or from CBC on k1, as RFC 2104 / RFC 3566 define them. */
static int
mac_one(IMB_MGR *mgr, const MacObject *m, const uint8_t *data, uint64_t len, uint8_t *out)
{
    if (m->kind == K_XCBC) {
        /* RFC 3566: CBC-MAC with k1 where the last block is xored with k2 (complete) or
         * padded and xored with k3; the MAC is the last CBC block. */
        uint64_t full = len && len % 16 == 0 ? len : (len / 16 + 1) * 16;
        uint8_t *tmp = malloc(full);
        if (tmp == NULL)
            return -2;
        memcpy(tmp, data, len);
        const uint8_t *k;
        if (len && len % 16 == 0) {
            k = m->keys->ipad;
        } else {
            memset(tmp + len, 0, full - len);
            tmp[len] = 0x80;
            k = m->keys->opad;
        }
        for (int i = 0; i < 16; i++)
            tmp[full - 16 + i] ^= k[i];
        IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
        job->cipher_mode = IMB_CIPHER_CBC;
        job->cipher_direction = IMB_DIR_ENCRYPT;
        job->enc_keys = m->keys->aes.enc;
        job->dec_keys = m->keys->aes.enc;
        job->key_len_in_bytes = 16;
        job->iv = EMPTY;
        job->iv_len_in_bytes = 16;
        job->hash_alg = IMB_AUTH_NULL;
        job->chain_order = IMB_ORDER_CIPHER_HASH;
        job->src = tmp;
        job->dst = tmp;
        job->cipher_start_src_offset_in_bytes = 0;
        job->msg_len_to_cipher_in_bytes = full;
        int st = run_one(mgr);
        memcpy(out, tmp + full - 16, 16);
        explicit_bzero(tmp, full);
        free(tmp);
        return st == IMB_STATUS_COMPLETED ? 0 : -1;
    }
    if (m->kind != K_CMAC && (len == 0 || len > 65535)) {
        uint64_t b = (uint64_t)m->block;
        uint8_t inner[64];
        uint8_t *tmp = malloc(b + (len > (uint64_t)m->digest ? len : (uint64_t)m->digest));
        if (tmp == NULL)
            return -2;
        memcpy(tmp, m->keys->block_i, b);
        memcpy(tmp + b, data, len);
        plain_hash(mgr, m->kind, tmp, b + len, inner);
        memcpy(tmp, m->keys->block_o, b);
        memcpy(tmp + b, inner, (size_t)m->digest);
        plain_hash(mgr, m->kind, tmp, b + (uint64_t)m->digest, out);
        explicit_bzero(tmp, b);
        free(tmp);
        return 0;
    }
    if (m->kind == K_CMAC && len > 65535)
        return -3;
    IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
    job->cipher_mode = IMB_CIPHER_NULL;
    job->cipher_direction = IMB_DIR_ENCRYPT;
    job->chain_order = IMB_ORDER_HASH_CIPHER;
    job->src = len ? data : EMPTY;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = len;
    mac_job(job, m, out, (uint64_t)m->digest);
    return run_one(mgr) == IMB_STATUS_COMPLETED ? 0 : -1;
}

static PyObject *
mac_mac(MacObject *self, PyObject *data_obj)
{
    Py_buffer data;
    if (self->keys == NULL) {
        PyErr_SetString(PyExc_ValueError, "Mac not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    uint8_t out[64];
    int rc;
    if (data.len >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        rc = mac_one(mgr, self, data.buf, (uint64_t)data.len, out);
        Py_END_ALLOW_THREADS
    } else {
        rc = mac_one(mgr, self, data.buf, (uint64_t)data.len, out);
    }
    PyBuffer_Release(&data);
    if (rc == -2)
        return PyErr_NoMemory();
    if (rc == -3) {
        PyErr_SetString(PyExc_ValueError, "aes-cmac here takes at most 65535 bytes");
        return NULL;
    }
    if (rc < 0) {
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused the MAC job: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)out, self->digest);
}

static PyObject *
mac_get_digest(MacObject *self, void *c) { return PyLong_FromLong(self->digest); }

static PyMethodDef mac_methods[] = {
    {"mac", (PyCFunction)mac_mac, METH_O, "mac(data) -> the full MAC"},
    {NULL}
};

static PyGetSetDef mac_getset[] = {
    {"digest_bytes", (getter)mac_get_digest, NULL, "full output length in bytes", NULL},
    {NULL}
};

static PyTypeObject MacType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipsec_plugins.ipsecmb._ipsecmb.Mac",
    .tp_basicsize = sizeof(MacObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Mac(kind, key): HMAC-SHA-1/256/384/512, AES-XCBC-MAC or AES-CMAC on one key",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)mac_init,
    .tp_dealloc = (destructor)mac_dealloc,
    .tp_methods = mac_methods,
    .tp_getset = mac_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* Chain: encrypt-then-MAC over a batch (ESP with a cipher and an integrity algorithm)      */

typedef struct {
    PyObject_HEAD
    CipherObject *cipher;   /* NULL: no encryption (ESP null) */
    MacObject *mac;
    int icv_bytes;
    int cipher_at;          /* bytes from a message's start to its cipher text */
} ChainObject;

static void
chain_dealloc(ChainObject *self)
{
    Py_CLEAR(self->cipher);
    Py_CLEAR(self->mac);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
chain_init(ChainObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cipher", "mac", "icv_bytes", "cipher_at", NULL};
    PyObject *c, *m;
    int icv, at;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!ii", kwlist, &c, &MacType, &m, &icv, &at))
        return -1;
    if (c != Py_None && !PyObject_TypeCheck(c, &CipherType)) {
        PyErr_SetString(PyExc_TypeError, "cipher must be a Cipher or None");
        return -1;
    }
    MacObject *mo = (MacObject *)m;
    if (mo->keys == NULL || (c != Py_None && ((CipherObject *)c)->keys == NULL)) {
        PyErr_SetString(PyExc_ValueError, "Chain needs initialised Cipher and Mac objects");
        return -1;
    }
    int ok = icv > 0 && icv <= mo->digest;
    if (mo->kind == K_XCBC)
        ok = icv == 12;
    else if (mo->kind != K_CMAC)
        ok = icv == mo->digest / 2 + (mo->kind == K_HMAC_SHA1 ? 2 : 0) || icv == mo->digest;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "an ICV of %d bytes is not one this MAC's job takes", icv);
        return -1;
    }
    if (at < 8 || at > 64) {
        PyErr_Format(PyExc_ValueError, "cipher_at must be 8..64, not %d", at);
        return -1;
    }
    Py_XINCREF(c == Py_None ? NULL : c);
    Py_XSETREF(self->cipher, c == Py_None ? NULL : (CipherObject *)c);
    Py_INCREF(m);
    Py_XSETREF(self->mac, mo);
    self->icv_bytes = icv;
    self->cipher_at = at;
    return 0;
}

/* seal_batch / open_batch(buf, starts, lengths, ivs, his):
 * message i starts at starts[i] and is lengths[i] bytes long (ESP header, IV, cipher text:
 * what the ICV covers); its cipher text is from cipher_at to the end, encrypted or decrypted
 * in place with the 16-byte IV (CBC) or counter block (CTR) ivs[i]; its ICV is the icv_bytes
 * after it, written by seal, checked by open.  his: n x 4 bytes appended to the ICV input
 * (ESN's high sequence number), or None.  open returns n verdict bytes (1 = ICV verifies). */
static PyObject *
chain_batch(ChainObject *self, PyObject *args, int enc)
{
    PyObject *bo, *so, *lo, *io, *ho;
    Py_buffer buf = {0}, starts = {0}, lens = {0}, ivs = {0}, his = {0};
    PyObject *result = NULL;
    uint8_t *verdicts = NULL, *scratch = NULL;
    if (!PyArg_ParseTuple(args, enc ? "OOOOO:seal_batch" : "OOOOO:open_batch",
                          &bo, &so, &lo, &io, &ho))
        return NULL;
    if (self->mac == NULL) {
        PyErr_SetString(PyExc_ValueError, "Chain not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    Py_ssize_t n = -1, ivw = 16, hw = 4;
    int esn = ho != Py_None;
    if (PyObject_GetBuffer(bo, &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (get_i64(so, &starts, &n, "starts") < 0)
        goto done;
    if (get_i64(lo, &lens, &n, "lengths") < 0)
        goto done;
    if (n > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "a batch takes at most %d messages, not %zd", MAX_BATCH, n);
        goto done;
    }
    if (get_rows(io, &ivs, n, &ivw, "ivs") < 0)
        goto done;
    if (esn && get_rows(ho, &his, n, &hw, "his") < 0)
        goto done;
    int64_t icv = self->icv_bytes, at = self->cipher_at;
    int64_t after = icv > 4 || !esn ? icv : 4;
    /* The job API hashes 1..65535 bytes; a cipher needs at least one byte of cipher text. */
    int64_t min_len = self->cipher ? at + 1 : 1;
    if (check_regions(starts.buf, lens.buf, n, buf.len, 0, after, min_len,
                      65535 - (esn ? 4 : 0), "message") < 0)
        goto done;
    const int64_t *st = starts.buf, *ln = lens.buf;
    if (self->cipher && self->cipher->kind == K_CBC) {
        for (Py_ssize_t i = 0; i < n; i++)
            if ((ln[i] - at) % 16) {
                PyErr_Format(PyExc_ValueError, "message %zd: %lld bytes of aes-cbc cipher text "
                             "are not a multiple of 16", i, (long long)(ln[i] - at));
                goto done;
            }
    }
    /* per message: the computed tag (64) and the received ICV (64) */
    scratch = malloc(n ? (size_t)n * 128 : 1);
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (!enc) {
        result = PyBytes_FromStringAndSize(NULL, n);
        if (result == NULL)
            goto done;
        verdicts = (uint8_t *)PyBytes_AS_STRING(result);
    }
    uint8_t *base = buf.buf;
    const uint8_t *ivb = ivs.buf, *hb = his.buf;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *m = base + st[i];
        uint8_t *rx = scratch + 128 * i + 64;
        memcpy(rx, m + ln[i], (size_t)after);     /* the received ICV, or what seal overwrites */
        if (esn)
            memcpy(m + ln[i], hb + 4 * i, 4);
        IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
        if (self->cipher) {
            cipher_job(job, self->cipher, enc, ivb + 16 * i);
            job->cipher_start_src_offset_in_bytes = (uint64_t)at;
            job->msg_len_to_cipher_in_bytes = (uint64_t)(ln[i] - at);
        } else {
            job->cipher_mode = IMB_CIPHER_NULL;
            job->cipher_direction = enc ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
            job->msg_len_to_cipher_in_bytes = 0;
        }
        job->chain_order = enc ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
        job->src = m;
        job->dst = m + at;
        job->hash_start_src_offset_in_bytes = 0;
        job->msg_len_to_hash_in_bytes = (uint64_t)(ln[i] + (esn ? 4 : 0));
        mac_job(job, self->mac, scratch + 128 * i, (uint64_t)icv);
        job->user_data = (void *)(intptr_t)i;
        job = IMB_SUBMIT_JOB(mgr);
        while (job != NULL) {
            failed |= job->status != IMB_STATUS_COMPLETED;
            job = IMB_GET_COMPLETED_JOB(mgr);
        }
    }
    IMB_JOB *job;
    while ((job = IMB_FLUSH_JOB(mgr)) != NULL)
        failed |= job->status != IMB_STATUS_COMPLETED;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *m = base + st[i];
        const uint8_t *tag = scratch + 128 * i, *rx = tag + 64;
        if (enc) {
            memcpy(m + ln[i], tag, (size_t)icv);
        } else {
            memcpy(m + ln[i], rx, (size_t)after);   /* the buffer keeps what it was given */
            verdicts[i] = !ct_diff(tag, rx, (size_t)icv);
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_CLEAR(result);
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused a job of the batch: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
        goto done;
    }
    if (enc) {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    if (scratch != NULL) {
        explicit_bzero(scratch, n ? (size_t)n * 128 : 1);
        free(scratch);
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&ivs);
    PyBuffer_Release(&his);
    return result;
}

/* Chain.esp_seal(packets, heads, head_len, nhs, block, ivs, his) -> [bytes]: as Aead.esp_seal,
 * with the cipher text from cipher_at bytes after the ESP header's start (head_len - cipher_at
 * bytes into the result) under IV / counter block ivs[i] (16 bytes), then the ICV over the ESP
 * header, IV and cipher text (and his[i], 4 bytes, with ESN; None without). */
static PyObject *
chain_esp_seal(ChainObject *self, PyObject *args)
{
    seal_args a;
    int block;
    PyObject *out = NULL;
    uint8_t *scratch = NULL;
    Py_ssize_t n = 0;
    if (self->mac == NULL) {
        PyErr_SetString(PyExc_ValueError, "Chain not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (seal_args_get(args, &a, &block, 16, 1, "OOnOiOO:esp_seal") < 0)
        goto done;
    n = a.pv.n;
    int esn = a.aads.obj != NULL;
    int64_t icv = self->icv_bytes, at = self->cipher_at;
    int64_t esp_at = a.head_len - at;
    if (esp_at < 0 || (esn && (a.aads.len != 4 * n || icv < 4))) {
        PyErr_Format(PyExc_ValueError, "esp_seal: head_len %zd is shorter than cipher_at %lld, "
                     "or his is not n x 4 bytes / the ICV shorter than 4 bytes", a.head_len,
                     (long long)at);
        goto done;
    }
    if (self->cipher && self->cipher->kind == K_CBC && block % 16) {
        PyErr_Format(PyExc_ValueError, "aes-cbc needs a block of 16 bytes, not %d", block);
        goto done;
    }
    out = frame(&a.pv, a.heads.buf, a.head_len, a.nhs.buf, block, (int)icv, a.at, a.plen);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        if (at + a.plen[i] + (esn ? 4 : 0) > 65535) {
            PyErr_Format(PyExc_ValueError, "packet %zd: too long for the job API", i);
            Py_CLEAR(out);
            goto done;
        }
    scratch = malloc(n ? (size_t)n * 64 : 1);
    if (scratch == NULL) {
        PyErr_NoMemory();
        Py_CLEAR(out);
        goto done;
    }
    const uint8_t *ivb = a.rows.buf, *hb = a.aads.buf;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *m = a.at[i] + esp_at;
        int64_t ln = at + a.plen[i];
        if (esn)
            memcpy(m + ln, hb + 4 * i, 4);   /* the ICV's room holds the high bits meanwhile */
        IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
        if (self->cipher) {
            cipher_job(job, self->cipher, 1, ivb + 16 * i);
            job->cipher_start_src_offset_in_bytes = (uint64_t)at;
            job->msg_len_to_cipher_in_bytes = (uint64_t)a.plen[i];
        } else {
            job->cipher_mode = IMB_CIPHER_NULL;
            job->cipher_direction = IMB_DIR_ENCRYPT;
            job->msg_len_to_cipher_in_bytes = 0;
        }
        job->chain_order = IMB_ORDER_CIPHER_HASH;
        job->src = m;
        job->dst = m + at;
        job->hash_start_src_offset_in_bytes = 0;
        job->msg_len_to_hash_in_bytes = (uint64_t)(ln + (esn ? 4 : 0));
        mac_job(job, self->mac, scratch + 64 * i, (uint64_t)icv);
        job = IMB_SUBMIT_JOB(mgr);
        while (job != NULL) {
            failed |= job->status != IMB_STATUS_COMPLETED;
            job = IMB_GET_COMPLETED_JOB(mgr);
        }
    }
    IMB_JOB *job;
    while ((job = IMB_FLUSH_JOB(mgr)) != NULL)
        failed |= job->status != IMB_STATUS_COMPLETED;
    for (Py_ssize_t i = 0; i < n; i++)
        memcpy(a.at[i] + esp_at + at + a.plen[i], scratch + 64 * i, (size_t)icv);
    Py_END_ALLOW_THREADS
    if (failed) {
        Py_CLEAR(out);
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused a job of the batch: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
    }
done:
    if (scratch != NULL) {
        explicit_bzero(scratch, n ? (size_t)n * 64 : 1);
        free(scratch);
    }
    seal_args_release(&a);
    return out;
}

/* Chain.esp_open(packets, esp_at, lengths, ivs) -> (verdicts, plaintexts): packet i's ESP
 * header starts at esp_at, the ICV covers lengths[i] bytes from there and follows them; the
 * cipher text (from cipher_at to the ICV) is decrypted into one bytes object, back to back;
 * verdict i is 1 where the ICV verifies.  No ESN here (its ICV input is not in the packet). */
static PyObject *
chain_esp_open(ChainObject *self, PyObject *args)
{
    PyObject *po, *lo, *io;
    Py_ssize_t esp_at;
    packet_views pv = {0};
    Py_buffer lens = {0}, ivs = {0};
    PyObject *verdicts = NULL, *plain = NULL, *result = NULL;
    uint8_t *scratch = NULL;
    Py_ssize_t n = -1, ivw = 16;
    if (!PyArg_ParseTuple(args, "OnOO:esp_open", &po, &esp_at, &lo, &io))
        return NULL;
    if (self->mac == NULL) {
        PyErr_SetString(PyExc_ValueError, "Chain not initialised");
        return NULL;
    }
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    if (esp_at < 0 || esp_at > 1024) {
        PyErr_Format(PyExc_ValueError, "esp_at must be 0..1024, not %zd", esp_at);
        return NULL;
    }
    if (get_views(po, &pv) < 0)
        goto done;
    n = pv.n;
    if (get_i64(lo, &lens, &n, "lengths") < 0)
        goto done;
    if (get_rows(io, &ivs, n, &ivw, "ivs") < 0)
        goto done;
    const int64_t *ln = lens.buf;
    int64_t icv = self->icv_bytes, at = self->cipher_at, total = 0;
    int64_t min_len = self->cipher ? at + 1 : at;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ln[i] < min_len || ln[i] > 65535 || esp_at + ln[i] + icv > (int64_t)pv.views[i].len
                || (self->cipher && self->cipher->kind == K_CBC && (ln[i] - at) % 16)) {
            PyErr_Format(PyExc_ValueError, "packet %zd: %lld bytes from byte %zd and a "
                         "%lld-byte ICV do not fit its %zd bytes (or are not whole blocks)", i,
                         (long long)ln[i], esp_at, (long long)icv, pv.views[i].len);
            goto done;
        }
        total += ln[i] - at;
    }
    scratch = malloc(n ? (size_t)n * 64 : 1);
    verdicts = PyBytes_FromStringAndSize(NULL, n);
    plain = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (verdicts == NULL || plain == NULL)
        goto done;
    uint8_t *v = (uint8_t *)PyBytes_AS_STRING(verdicts), *p0 = (uint8_t *)PyBytes_AS_STRING(plain);
    const uint8_t *ivb = ivs.buf;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    uint8_t *p = p0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *m = (const uint8_t *)pv.views[i].buf + esp_at;
        IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
        if (self->cipher) {
            cipher_job(job, self->cipher, 0, ivb + 16 * i);
            job->cipher_start_src_offset_in_bytes = (uint64_t)at;
            job->msg_len_to_cipher_in_bytes = (uint64_t)(ln[i] - at);
        } else {
            job->cipher_mode = IMB_CIPHER_NULL;
            job->cipher_direction = IMB_DIR_DECRYPT;
            job->msg_len_to_cipher_in_bytes = 0;
            memcpy(p, m + at, (size_t)(ln[i] - at));
        }
        job->chain_order = IMB_ORDER_HASH_CIPHER;
        job->src = m;
        job->dst = p;
        job->hash_start_src_offset_in_bytes = 0;
        job->msg_len_to_hash_in_bytes = (uint64_t)ln[i];
        mac_job(job, self->mac, scratch + 64 * i, (uint64_t)icv);
        job = IMB_SUBMIT_JOB(mgr);
        while (job != NULL) {
            failed |= job->status != IMB_STATUS_COMPLETED;
            job = IMB_GET_COMPLETED_JOB(mgr);
        }
        p += ln[i] - at;
    }
    IMB_JOB *job;
    while ((job = IMB_FLUSH_JOB(mgr)) != NULL)
        failed |= job->status != IMB_STATUS_COMPLETED;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *m = (const uint8_t *)pv.views[i].buf + esp_at;
        v[i] = !ct_diff(scratch + 64 * i, m + ln[i], (size_t)icv);
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused a job of the batch: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
        goto done;
    }
    result = PyTuple_Pack(2, verdicts, plain);
done:
    if (scratch != NULL) {
        explicit_bzero(scratch, n > 0 ? (size_t)n * 64 : 1);
        free(scratch);
    }
    Py_XDECREF(verdicts);
    Py_XDECREF(plain);
    release_views(&pv);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&ivs);
    return result;
}

/* The fused calls of a Chain (AES-CBC or AES-CTR, then a MAC; no ESN): the framing and rules
 * of the Aead ones, the crypto as one multi-buffer job per packet. */
static int
chain_fused_ivb(ChainObject *self)
{
    if (self->mac == NULL || self->cipher == NULL) {
        PyErr_SetString(PyExc_ValueError, "the fused calls need a Chain with a cipher");
        return -1;
    }
    int ivb = self->cipher->kind == K_CBC ? 16 : 8;
    if (self->cipher_at != 8 + ivb) {
        PyErr_Format(PyExc_ValueError, "cipher_at %d is not 8 + a %d-byte IV", self->cipher_at, ivb);
        return -1;
    }
    return ivb;
}

/* One packet's job: cipher (CBC IV or CTR counter block at iv) over `len` bytes from
 * cipher_at, MAC over the ESP header, IV and cipher text into tag. */
static void
chain_fused_job(IMB_MGR *mgr, const ChainObject *c, int enc, const uint8_t *esp, uint8_t *dst,
                int64_t len, const uint8_t *iv, uint8_t *tag, int *failed)
{
    IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
    cipher_job(job, c->cipher, enc, iv);
    job->cipher_start_src_offset_in_bytes = (uint64_t)c->cipher_at;
    job->msg_len_to_cipher_in_bytes = (uint64_t)len;
    job->chain_order = enc ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->src = esp;
    job->dst = dst;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = (uint64_t)(c->cipher_at + len);
    mac_job(job, c->mac, tag, (uint64_t)c->icv_bytes);
    job = IMB_SUBMIT_JOB(mgr);
    while (job != NULL) {
        *failed |= job->status != IMB_STATUS_COMPLETED;
        job = IMB_GET_COMPLETED_JOB(mgr);
    }
}

static int
chain_fused_flush(IMB_MGR *mgr)
{
    int failed = 0;
    IMB_JOB *job;
    while ((job = IMB_FLUSH_JOB(mgr)) != NULL)
        failed |= job->status != IMB_STATUS_COMPLETED;
    return failed;
}

/* A CTR counter block: salt, the packet's 8-byte IV, counter 1 (RFC 3686). */
static inline void
ctr_block(uint8_t *blk, const uint8_t *salt, const uint8_t *iv)
{
    memcpy(blk, salt, 4);
    memcpy(blk + 4, iv, 8);
    put32(blk + 12, 1);
}

/* Chain.esp_protect_into(buf, offsets, lengths, template, flags, salt, block, seq0, ident0
 *                        [, csum_start, csum_offset, ivs]): Aead.esp_protect_into for
 * encrypt-then-MAC; `ivs` is n x 16 random bytes for AES-CBC (the caller's CSPRNG), None for
 * AES-CTR (the IV is the sequence number). */
static PyObject *
chain_esp_protect_into(ChainObject *self, PyObject *args)
{
    PyObject *bo, *oo, *lo, *to, *so, *io = Py_None, *wl = NULL, *result = NULL;
    int flags, block;
    unsigned long long seq0;
    unsigned int ident0;
    Py_ssize_t cs_start = -1, cs_off = 0, n = -1, sixteen = 16;
    fused_spec s = {0};
    Py_buffer buf = {0}, offs = {0}, lens = {0}, ivs = {0};
    int *tos = NULL;
    uint8_t *scratch = NULL;
    int64_t *plens = NULL;
    if (!PyArg_ParseTuple(args, "OOOOiOiKI|nnO:esp_protect_into", &bo, &oo, &lo, &to, &flags,
                          &so, &block, &seq0, &ident0, &cs_start, &cs_off, &io))
        return NULL;
    int ivb = chain_fused_ivb(self);
    IMB_MGR *mgr = get_mgr();
    if (ivb < 0 || mgr == NULL)
        return NULL;
    if (cs_start > FUSED_MAX || cs_off < 0 || cs_off > 64) {
        PyErr_Format(PyExc_ValueError, "checksum at %zd + %zd is out of range", cs_start, cs_off);
        return NULL;
    }
    if (flags & FUSED_ESN || (ivb == 16 && block % 16)) {
        PyErr_SetString(PyExc_ValueError, "a Chain frames no ESN, and AES-CBC pads to 16 bytes");
        return NULL;
    }
    if (spec_get(to, flags, so, block, ivb, &s) < 0)
        return NULL;
    if (protect_into_args(bo, oo, lo, &buf, &offs, &lens, &n, s.head, seq0) < 0)
        goto done;
    if (ivb == 16 ? get_rows(io, &ivs, n, &sixteen, "ivs") < 0 : io != Py_None) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "ivs must be None for AES-CTR");
        goto done;
    }
    const int64_t *off = offs.buf, *len = lens.buf;
    uint8_t *wb = buf.buf;
    int icv = self->icv_bytes;
    tos = PyMem_Malloc(n ? (size_t)n * 2 * sizeof(int) : 1);
    plens = PyMem_Malloc(n ? (size_t)n * sizeof(int64_t) : 1);
    scratch = malloc(n ? (size_t)n * 80 : 1);       /* a tag (64) and a counter block (16) each */
    wl = PyBytes_FromStringAndSize(NULL, n * 8);
    if (tos == NULL || plens == NULL || scratch == NULL || wl == NULL) {
        if (wl != NULL)
            PyErr_NoMemory();
        goto done;
    }
    int64_t *w = (int64_t *)PyBytes_AS_STRING(wl);
    long long inner_bytes = 0;
    Py_ssize_t odd = fused_prepass(&s, wb, off, len, n, icv, buf.len, tos, w, &inner_bytes);
    if (odd != -1) {
        if (odd >= 0)
            result = PyLong_FromSsize_t(odd);
        goto done;
    }
    int failed = 0;
    const uint8_t *iv_rows = ivs.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *h = wb + off[i] - s.head, *esp = h + s.esp_at, *blk = scratch + 80 * i + 64;
        if (cs_start >= 0)
            complete_csum(wb + off[i], len[i], cs_start, cs_off);
        plens[i] = fused_frame_one(&s, h, len[i], icv, tos[2 * i], tos[2 * i + 1] & 0xFFFF,
                                   (uint8_t)(tos[2 * i + 1] >> 16), seq0 + 1 + (uint64_t)i,
                                   (ident0 + 1 + (unsigned)i) & 0xFFFF,
                                   ivb == 16 ? iv_rows + 16 * i : NULL);
        if (ivb == 8)
            ctr_block(blk, s.salt, esp + 8);
        chain_fused_job(mgr, self, 1, esp, esp + self->cipher_at, plens[i],
                        ivb == 16 ? esp + 8 : blk, scratch + 80 * i, &failed);
    }
    failed |= chain_fused_flush(mgr);
    for (Py_ssize_t i = 0; i < n; i++)
        memcpy(wb + off[i] - s.head + s.esp_at + self->cipher_at + plens[i], scratch + 80 * i,
               (size_t)icv);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused a job of the batch: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
        goto done;
    }
    result = Py_BuildValue("(OL)", wl, inner_bytes);
done:
    if (scratch != NULL) {
        explicit_bzero(scratch, n > 0 ? (size_t)n * 80 : 1);
        free(scratch);
    }
    Py_XDECREF(wl);
    PyMem_Free(tos);
    PyMem_Free(plens);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&ivs);
    PyBuffer_Release(&s.tmpl);
    return result;
}

/* Chain.esp_unprotect(...): Aead.esp_unprotect for encrypt-then-MAC (no ESN): every packet of
 * the run is verified and decrypted by one job each, then judged in order. */
static PyObject *
chain_esp_unprotect(ChainObject *self, PyObject *args)
{
    unprot u;
    PyObject *result = NULL;
    uint8_t *scratch = NULL;
    int ivb = chain_fused_ivb(self);
    IMB_MGR *mgr = get_mgr();
    if (ivb < 0 || mgr == NULL)
        return NULL;
    if (unprot_begin(&u, args, self->icv_bytes, ivb, ivb == 16 ? 16 : 1) < 0)
        goto done;
    if (u.s.flags & FUSED_ESN) {
        PyErr_SetString(PyExc_ValueError, "a Chain frames no ESN");
        goto done;
    }
    scratch = malloc(u.m ? (size_t)u.m * 80 : 1);
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t stop = u.m, accepted = 0;
    long long inner_bytes = 0;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < u.m; i++) {
        const uint8_t *esp = u.ptr[i] + u.s.esp_at;
        uint8_t *blk = scratch + 80 * i + 64;
        if (ivb == 8)
            ctr_block(blk, u.s.salt, esp + 8);
        chain_fused_job(mgr, self, 0, esp, u.pl + u.ia[i], u.plen[i] - u.s.head - u.icv,
                        ivb == 16 ? esp + 8 : blk, scratch + 80 * i, &failed);
    }
    failed |= chain_fused_flush(mgr);
    uint64_t running = u.top;
    for (Py_ssize_t i = 0; i < u.m && !failed; i++) {
        uint64_t full = unprot_seq(&u, i);
        if (full <= running) {
            stop = i;
            break;
        }
        const uint8_t *icv_at = u.ptr[i] + u.plen[i] - u.icv;
        if (unprot_judge(&u, i, !ct_diff(scratch + 80 * i, icv_at, (size_t)u.icv), full, &running,
                         &accepted, &inner_bytes) < 0) {
            stop = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_Format(PyExc_RuntimeError, "intel-ipsec-mb refused a job of the batch: %s",
                     imb_get_strerror(imb_get_errno(mgr)));
        goto done;
    }
    result = unprot_finish(&u, stop, accepted, inner_bytes);
done:
    if (scratch != NULL) {
        explicit_bzero(scratch, u.m ? (size_t)u.m * 80 : 1);
        free(scratch);
    }
    unprot_release(&u);
    return result;
}

static PyObject *chain_seal_batch(ChainObject *s, PyObject *a) { return chain_batch(s, a, 1); }
static PyObject *chain_open_batch(ChainObject *s, PyObject *a) { return chain_batch(s, a, 0); }

static PyMethodDef chain_methods[] = {
    {"seal_batch", (PyCFunction)chain_seal_batch, METH_VARARGS,
     "seal_batch(buf, starts, lengths, ivs, his): encrypt then MAC, in place"},
    {"open_batch", (PyCFunction)chain_open_batch, METH_VARARGS,
     "open_batch(buf, starts, lengths, ivs, his) -> verdict bytes (1 = ICV verifies)"},
    {"esp_seal", (PyCFunction)chain_esp_seal, METH_VARARGS,
     "esp_seal(packets, heads, head_len, nhs, block, ivs, his) -> [framed, sealed bytes]"},
    {"esp_open", (PyCFunction)chain_esp_open, METH_VARARGS,
     "esp_open(packets, esp_at, lengths, ivs) -> (verdicts, plaintexts)"},
    {"esp_protect_into", (PyCFunction)chain_esp_protect_into, METH_VARARGS,
     "esp_protect_into(buf, offsets, lengths, template, flags, salt, block, seq0, ident0 "
     "[, csum_start, csum_offset, ivs]): see Aead.esp_protect_into"},
    {"esp_unprotect", (PyCFunction)chain_esp_unprotect, METH_VARARGS,
     "esp_unprotect(packets | buf, offsets, lengths, template, flags, salt, top, window, "
     "min_len): see Aead.esp_unprotect"},
    {"peek", (PyCFunction)obj_peek, METH_VARARGS, "peek(packets, k): see the module's peek"},
    {"cut", (PyCFunction)obj_cut, METH_VARARGS, "cut(buf, offsets, lengths): see the module's cut"},
    {NULL}
};

static PyObject *
chain_get_icv(ChainObject *self, void *c) { return PyLong_FromLong(self->icv_bytes); }
static PyObject *
chain_get_at(ChainObject *self, void *c) { return PyLong_FromLong(self->cipher_at); }

static PyGetSetDef chain_getset[] = {
    {"icv_bytes", (getter)chain_get_icv, NULL, "ICV length in bytes", NULL},
    {"cipher_at", (getter)chain_get_at, NULL, "bytes before the cipher text", NULL},
    {NULL}
};

static PyTypeObject ChainType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipsec_plugins.ipsecmb._ipsecmb.Chain",
    .tp_basicsize = sizeof(ChainObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Chain(cipher, mac, icv_bytes, cipher_at): ESP encrypt-then-MAC over batches",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)chain_init,
    .tp_dealloc = (destructor)chain_dealloc,
    .tp_methods = chain_methods,
    .tp_getset = chain_getset,
};

/* ---------------------------------------------------------------------------------------- */

static PyObject *
mod_arch(PyObject *m, PyObject *unused)
{
    IMB_MGR *mgr = get_mgr();
    if (mgr == NULL)
        return NULL;
    const char *names[] = {"none", "no-aesni", "sse", "avx", "avx2", "avx512"};
    int a = (int)mgr->used_arch;
    return PyUnicode_FromString(a >= 0 && a < 6 ? names[a] : "unknown");
}

static PyMethodDef module_methods[] = {
    {"arch", mod_arch, METH_NOARGS, "the code path intel-ipsec-mb chose for this CPU"},
    {"peek", mod_peek, METH_VARARGS, "peek(packets, k) -> (int64 lengths, first k bytes of each)"},
    {"cut", mod_cut, METH_VARARGS, "cut(buf, offsets, lengths) -> [bytes of each region]"},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_ipsecmb",
    "intel-ipsec-mb primitives for the ipsecmb backend (see the C source's header comment)",
    -1, module_methods,
};

PyMODINIT_FUNC
PyInit__ipsecmb(void)
{
    PyTypeObject *types[] = {&AeadType, &CipherType, &MacType, &ChainType};
    const char *names[] = {"Aead", "Cipher", "Mac", "Chain"};
    for (int i = 0; i < 4; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    for (int i = 0; i < 4; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    PyModule_AddIntConstant(m, "FUSED_V6", FUSED_V6);
    PyModule_AddIntConstant(m, "FUSED_UDP", FUSED_UDP);
    PyModule_AddIntConstant(m, "FUSED_ESN", FUSED_ESN);
    PyModule_AddIntConstant(m, "FUSED_BARE", FUSED_BARE);
    PyModule_AddStringConstant(m, "IMB_VERSION", imb_get_version_str());
    PyModule_AddStringConstant(m, "IMB_HEADER_VERSION", IMB_VERSION_STR);
    struct { const char *n; int v; } k[] = {
        {"GCM", K_GCM}, {"CHACHA", K_CHACHA}, {"CBC", K_CBC}, {"CTR", K_CTR},
        {"HMAC_SHA1", K_HMAC_SHA1}, {"HMAC_SHA256", K_HMAC_SHA256},
        {"HMAC_SHA384", K_HMAC_SHA384}, {"HMAC_SHA512", K_HMAC_SHA512},
        {"XCBC", K_XCBC}, {"CMAC", K_CMAC},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        PyModule_AddIntConstant(m, k[i].n, k[i].v);
    return m;
}
