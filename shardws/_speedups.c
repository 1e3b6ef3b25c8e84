/*
 * shardws._speedups: C versions of the protocol hot paths.
 *
 * Every function here has a pure-Python twin in shardws/speedups.py with the
 * same results and the same exceptions (type and message) for bad input;
 * tests/test_speedups.py checks the two against each other.
 *
 *   apply_mask(data, mask, /) -> bytes
 *   unmask_inplace(buffer, mask, offset=0, /) -> None
 *   parse_header(buf, offset, /) -> tuple | None
 *   scan_frames(buf, offset, require_mask, max_size, rsv1_allowed, /)
 *       -> (list[tuple[int, bytes, bool, bool]], int)
 *   scan_messages(buf, offset, require_mask, max_size, /)
 *       -> (list[str | bytes], int)
 *   parse_head(data, max_head, max_headers, max_line, names, values, /)
 *       -> (int, (str, str, str), list[tuple[str, str]], dict) | None
 *
 * The server's fast paths at the end (connection_fast_paths, flush_corked,
 * broadcast_plain, and the batched sends under the last two) have no twin
 * there: the Python methods of ServerConnection, Server._flush_corked() and
 * broadcast() they stand in for are their specification, and they call
 * those methods for every case they do not take (docs/internals.md).
 *
 * RFC 6455 section 5.3: "octet i of the transformed data
 * ("transformed-octet-i") is the XOR of octet i of the original data
 * ("original-octet-i") with octet at index i modulo 4 of the masking key
 * ("masking-key-octet-j")".
 *
 * Portable C (64-bit words, scalar tail); on x86-64 SSE2 (always present)
 * and AVX2 (runtime check) process 16 / 32 bytes per step.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <errno.h>
#ifndef _WIN32
#include <sys/socket.h>
#include <sys/uio.h>
#define DIRECT_WRITES 1
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: Python ignores SIGPIPE anyway */
#endif
#if defined(__linux__) && defined(__has_include)
#if __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#ifdef IORING_SETUP_COOP_TASKRUN /* Linux 5.19 headers */
#define BATCHED_SENDS 1
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif
#endif
#endif
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHARDWS_X86 1
#include <immintrin.h>
#else
#define SHARDWS_X86 0
#endif

/* Above this many bytes the GIL is released while masking. */
#define RELEASE_GIL_AT 65536

/* ------------------------------------------------------------ masking */

/* dst[i] = src[i] ^ mask[i % 4] for 0 <= i < n; src may equal dst. */
typedef void (*mask_fn)(const uint8_t *src, uint8_t *dst, Py_ssize_t n,
                        const uint8_t *mask);

static void
mask_words(const uint8_t *src, uint8_t *dst, Py_ssize_t n, const uint8_t *mask)
{
    uint8_t mask8[8];
    uint64_t word, m64;
    Py_ssize_t i = 0;

    memcpy(mask8, mask, 4);
    memcpy(mask8 + 4, mask, 4);
    memcpy(&m64, mask8, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&word, src + i, 8);
        word ^= m64;
        memcpy(dst + i, &word, 8);
    }
    /* i is a multiple of 8, hence of 4: the tail starts at mask phase 0. */
    for (; i < n; i++) {
        dst[i] = src[i] ^ mask[i & 3];
    }
}

#if SHARDWS_X86
static void
mask_sse2(const uint8_t *src, uint8_t *dst, Py_ssize_t n, const uint8_t *mask)
{
    uint32_t m32;
    Py_ssize_t i = 0;

    memcpy(&m32, mask, 4);
    __m128i m128 = _mm_set1_epi32((int)m32);
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(v, m128));
    }
    mask_words(src + i, dst + i, n - i, mask);
}

__attribute__((target("avx2"))) static void
mask_avx2(const uint8_t *src, uint8_t *dst, Py_ssize_t n, const uint8_t *mask)
{
    uint32_t m32;
    Py_ssize_t i = 0;

    memcpy(&m32, mask, 4);
    __m256i m256 = _mm256_set1_epi32((int)m32);
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, m256));
        _mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(b, m256));
    }
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, m256));
    }
    mask_sse2(src + i, dst + i, n - i, mask);
}
#endif

/* Chosen once at import (runtime CPU check). */
static mask_fn mask_large = mask_words;
static const char *mask_impl = "words64";

static inline void
do_mask(const uint8_t *src, uint8_t *dst, Py_ssize_t n, const uint8_t *mask)
{
    if (n < 16) {
        for (Py_ssize_t i = 0; i < n; i++) {
            dst[i] = src[i] ^ mask[i & 3];
        }
    }
    else if (n >= RELEASE_GIL_AT) {
        Py_BEGIN_ALLOW_THREADS
        mask_large(src, dst, n, mask);
        Py_END_ALLOW_THREADS
    }
    else {
        mask_large(src, dst, n, mask);
    }
}

/* ------------------------------------------------------ argument checks */

/*
 * Get a contiguous byte view of obj. The checks and their messages follow
 * the pure twin: not a buffer -> TypeError; read-only when writable is
 * asked -> TypeError; not C-contiguous -> BufferError.
 */
static int
get_bytes_view(PyObject *obj, Py_buffer *view, const char *func,
               const char *arg, int writable)
{
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' must be a bytes-like object, not '%.200s'",
                     func, arg, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_FULL_RO) < 0) {
        return -1;
    }
    if (writable && view->readonly) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError,
                     "%s() argument '%s' must be a writable bytes-like object, not '%.200s'",
                     func, arg, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_BufferError,
                     "%s() argument '%s' must be C-contiguous", func, arg);
        return -1;
    }
    return 0;
}

static int
get_mask(PyObject *obj, uint8_t mask[4], const char *func)
{
    Py_buffer view;

    if (get_bytes_view(obj, &view, func, "mask", 0) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        return -1;
    }
    memcpy(mask, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

static int
check_nargs(const char *func, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs < min || nargs > max) {
        if (min == max) {
            PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)",
                         func, min, nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd arguments (%zd given)",
                         func, min, max, nargs);
        }
        return -1;
    }
    return 0;
}

/* Offset as an index in [0, length]; else ValueError (TypeError if no int). */
static int
get_offset(PyObject *obj, Py_ssize_t length, Py_ssize_t *offset)
{
    Py_ssize_t value;
    PyObject *index = PyNumber_Index(obj);

    if (index == NULL) {
        return -1;
    }
    /* NULL: clamp on overflow, so a huge value lands in the range check. */
    value = PyNumber_AsSsize_t(index, NULL);
    Py_DECREF(index);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0 || value > length) {
        PyErr_SetString(PyExc_ValueError, "offset out of range");
        return -1;
    }
    *offset = value;
    return 0;
}

/* ------------------------------------------------------------ functions */

PyDoc_STRVAR(apply_mask_doc,
"apply_mask(data, mask, /) -> bytes\n\n"
"XOR data (any C-contiguous bytes-like object) with the 4-byte mask\n"
"repeated (RFC 6455 section 5.3). Raises ValueError unless the mask has 4\n"
"bytes, TypeError for a non bytes-like argument, BufferError for a\n"
"non-contiguous one.");

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data;
    uint8_t mask[4];
    PyObject *result;

    if (check_nargs("apply_mask", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (get_bytes_view(args[0], &data, "apply_mask", "data", 0) < 0) {
        return NULL;
    }
    if (get_mask(args[1], mask, "apply_mask") < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        do_mask((const uint8_t *)data.buf, (uint8_t *)PyBytes_AS_STRING(result),
                data.len, mask);
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(unmask_inplace_doc,
"unmask_inplace(buffer, mask, offset=0, /) -> None\n\n"
"XOR buffer[offset:] in place with the 4-byte mask repeated, mask octet 0\n"
"at buffer[offset]. buffer is a writable C-contiguous bytes-like object\n"
"(bytearray, memoryview). Raises ValueError for a bad mask length or an\n"
"offset outside [0, len(buffer)], TypeError for a read-only buffer.");

static PyObject *
unmask_inplace(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    uint8_t mask[4];
    Py_ssize_t offset = 0;

    if (check_nargs("unmask_inplace", nargs, 2, 3) < 0) {
        return NULL;
    }
    if (get_bytes_view(args[0], &buf, "unmask_inplace", "buffer", 1) < 0) {
        return NULL;
    }
    if (get_mask(args[1], mask, "unmask_inplace") < 0) {
        goto error;
    }
    if (nargs == 3 && get_offset(args[2], buf.len, &offset) < 0) {
        goto error;
    }
    {
        uint8_t *p = (uint8_t *)buf.buf + offset;
        do_mask(p, p, buf.len - offset, mask);
    }
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;

error:
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(parse_header_doc,
"parse_header(buf, offset, /) -> tuple | None\n\n"
"Decode the frame header starting at buf[offset] (RFC 6455 section 5.2).\n"
"Returns (fin, rsv1, rsv2, rsv3, opcode, masked, payload_length,\n"
"header_length, mask_key) -- flags as bools, mask_key 4 bytes or None --\n"
"or None when buf holds fewer bytes than the header. Nothing is\n"
"validated (opcode, RSV bits, the 64-bit length's most significant bit):\n"
"that is the frame parser's job. Raises ValueError for an offset outside\n"
"[0, len(buf)].");

static PyObject *
parse_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer buf;
    Py_ssize_t offset, avail, header_length;
    const uint8_t *p;
    uint64_t length;
    PyObject *mask_key, *result;
    int masked;

    if (check_nargs("parse_header", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (get_bytes_view(args[0], &buf, "parse_header", "buf", 0) < 0) {
        return NULL;
    }
    if (get_offset(args[1], buf.len, &offset) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    p = (const uint8_t *)buf.buf + offset;
    avail = buf.len - offset;
    if (avail < 2) {
        goto incomplete;
    }
    masked = (p[1] & 0x80) != 0;
    length = p[1] & 0x7f;
    header_length = 2;
    if (length == 126) {
        header_length = 4;
    }
    else if (length == 127) {
        header_length = 10;
    }
    if (masked) {
        header_length += 4;
    }
    if (avail < header_length) {
        goto incomplete;
    }
    if (length == 126) {
        length = ((uint64_t)p[2] << 8) | p[3];
    }
    else if (length == 127) {
        length = 0;
        for (int i = 2; i < 10; i++) {
            length = (length << 8) | p[i];
        }
    }
    if (masked) {
        mask_key = PyBytes_FromStringAndSize((const char *)p + header_length - 4, 4);
        if (mask_key == NULL) {
            PyBuffer_Release(&buf);
            return NULL;
        }
    }
    else {
        mask_key = Py_NewRef(Py_None);
    }
    result = Py_BuildValue("(OOOOiOKnN)",
                           (p[0] & 0x80) ? Py_True : Py_False,
                           (p[0] & 0x40) ? Py_True : Py_False,
                           (p[0] & 0x20) ? Py_True : Py_False,
                           (p[0] & 0x10) ? Py_True : Py_False,
                           (int)(p[0] & 0x0f),
                           masked ? Py_True : Py_False,
                           (unsigned long long)length,
                           header_length,
                           mask_key);
    PyBuffer_Release(&buf);
    return result;

incomplete:
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

/* max_size: None (unbounded) or an integer; a huge one is unbounded, a
 * negative one is below every length. */
static int
get_max_size(PyObject *obj, long long *max_size, int *unbounded)
{
    int overflow = 0;
    PyObject *index;

    *unbounded = obj == Py_None;
    *max_size = 0;
    if (*unbounded) {
        return 0;
    }
    index = PyNumber_Index(obj);
    if (index == NULL) {
        return -1;
    }
    *max_size = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (*max_size == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow > 0) {
        *unbounded = 1; /* above any length a frame can declare */
    }
    /* overflow < 0: max_size stays -1, below every length */
    return 0;
}

/* The arguments scan_frames and scan_messages share:
 * (buf, offset, require_mask, max_size, ...). On success the caller owns
 * a->buf and must release it. */
typedef struct {
    Py_buffer buf;
    Py_ssize_t pos;
    int require_mask;
    int unbounded;
    long long max_size;
} scan_args;

static int
get_scan_args(const char *func, PyObject *const *args, Py_ssize_t nargs,
              Py_ssize_t expected, scan_args *a)
{
    if (check_nargs(func, nargs, expected, expected) < 0) {
        return -1;
    }
    if (get_bytes_view(args[0], &a->buf, func, "buf", 0) < 0) {
        return -1;
    }
    if (get_offset(args[1], a->buf.len, &a->pos) < 0
        || (a->require_mask = PyObject_IsTrue(args[2])) < 0
        || get_max_size(args[3], &a->max_size, &a->unbounded) < 0) {
        PyBuffer_Release(&a->buf);
        return -1;
    }
    return 0;
}

/* Where the frame at p (avail bytes, avail >= 2) lies: its payload length
 * and header length (mask key included when masked). Returns 0 -- the scan
 * stops there -- when the header or the payload is incomplete or the
 * 64-bit length has its most significant bit set; 1 otherwise. */
static int
frame_extent(const uint8_t *p, Py_ssize_t avail, int masked, uint64_t *length,
             Py_ssize_t *header)
{
    uint64_t n = p[1] & 0x7f;
    Py_ssize_t h = 2;

    if (n == 126) {
        if (avail < 4) return 0;
        n = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
    }
    else if (n == 127) {
        if (avail < 10) return 0;
        n = 0;
        for (int i = 2; i < 10; i++) {
            n = (n << 8) | p[i];
        }
        if (n >> 63) return 0;
        h = 10;
    }
    if (masked) {
        h += 4;
    }
    if (avail < h || (uint64_t)(avail - h) < n) return 0;
    *length = n;
    *header = h;
    return 1;
}

/* The payload of the frame at p as a new bytes object, unmasked with the
 * 4 bytes before it when masked. */
static PyObject *
payload_bytes(const uint8_t *p, Py_ssize_t header, uint64_t length, int masked)
{
    PyObject *payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);

    if (payload == NULL) {
        return NULL;
    }
    if (masked) {
        do_mask(p + header, (uint8_t *)PyBytes_AS_STRING(payload), (Py_ssize_t)length,
                p + header - 4);
    }
    else {
        memcpy(PyBytes_AS_STRING(payload), p + header, (size_t)length);
    }
    return payload;
}

PyDoc_STRVAR(scan_frames_doc,
"scan_frames(buf, offset, require_mask, max_size, rsv1_allowed, /)\n"
"    -> (list[tuple[int, bytes, bool, bool]], int)\n\n"
"Decode the run of complete, valid frames starting at buf[offset] into\n"
"(opcode, payload, fin, rsv1) tuples, payloads unmasked, and return them\n"
"with the offset after the last one. The scan stops BEFORE the first\n"
"frame that is incomplete or breaks a rule (unknown opcode; RSV2/RSV3;\n"
"RSV1 unless rsv1_allowed, and then only on text/binary frames;\n"
"fragmented control frame; mask bit != require_mask; control payload\n"
"> 125; 64-bit length with the most significant bit set; data payload\n"
"> max_size, None = unbounded) -- it never raises for the peer's faults:\n"
"the caller's frame parser reports those -- and stops AFTER a frame with\n"
"FIN clear or a close frame (their receiver may change max_size or stop\n"
"reading). Raises ValueError for an offset outside [0, len(buf)].");

static PyObject *
scan_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    scan_args a;
    Py_ssize_t pos, end;
    int rsv1_allowed;
    const uint8_t *base;
    PyObject *frames = NULL, *result;

    if (get_scan_args("scan_frames", args, nargs, 5, &a) < 0) {
        return NULL;
    }
    if ((rsv1_allowed = PyObject_IsTrue(args[4])) < 0) {
        goto error;
    }
    frames = PyList_New(0);
    if (frames == NULL) {
        goto error;
    }
    base = (const uint8_t *)a.buf.buf;
    pos = a.pos;
    end = a.buf.len;
    while (end - pos >= 2) {
        const uint8_t *p = base + pos;
        uint8_t b0 = p[0], b1 = p[1];
        int opcode = b0 & 0x0f, fin = (b0 & 0x80) != 0, rsv1 = (b0 & 0x40) != 0;
        int control = (opcode & 0x08) != 0;
        Py_ssize_t header;
        uint64_t length;
        PyObject *payload, *frame;

        /* The checks of FrameParser, in short: stop and let it raise. */
        if (opcode > 0xA || (opcode > 2 && opcode < 8)) break;
        if (b0 & 0x30) break;
        if (rsv1 && (!rsv1_allowed || (opcode != 1 && opcode != 2))) break;
        if (control && (!fin || (b1 & 0x7f) > 125)) break;
        if (((b1 & 0x80) != 0) != (a.require_mask != 0)) break;
        if (!frame_extent(p, end - pos, a.require_mask, &length, &header)) break;
        if (!control && !a.unbounded && (long long)length > a.max_size) break;

        payload = payload_bytes(p, header, length, a.require_mask);
        if (payload == NULL) {
            goto error;
        }
        frame = PyTuple_New(4);
        if (frame == NULL) {
            Py_DECREF(payload);
            goto error;
        }
        PyTuple_SET_ITEM(frame, 0, PyLong_FromLong(opcode)); /* small int: cached */
        PyTuple_SET_ITEM(frame, 1, payload);
        PyTuple_SET_ITEM(frame, 2, Py_NewRef(fin ? Py_True : Py_False));
        PyTuple_SET_ITEM(frame, 3, Py_NewRef(rsv1 ? Py_True : Py_False));
        if (PyList_Append(frames, frame) < 0) {
            Py_DECREF(frame);
            goto error;
        }
        Py_DECREF(frame);
        pos += header + (Py_ssize_t)length;
        if (!fin || opcode == 8) break;
    }
    PyBuffer_Release(&a.buf);
    result = Py_BuildValue("(Nn)", frames, pos);
    return result;

error:
    Py_XDECREF(frames);
    PyBuffer_Release(&a.buf);
    return NULL;
}

PyDoc_STRVAR(scan_messages_doc,
"scan_messages(buf, offset, require_mask, max_size, /)\n"
"    -> (list[str | bytes], int)\n\n"
"Decode the run of complete frames starting at buf[offset] that are each\n"
"a whole uncompressed message -- FIN set, RSV1-3 clear, opcode text or\n"
"binary, mask bit == require_mask, payload <= max_size (None =\n"
"unbounded), and for text valid UTF-8 -- into str (text) and bytes\n"
"(binary), payloads unmasked, and return them with the offset after the\n"
"last one. The scan stops BEFORE the first other frame (incomplete,\n"
"fragmented, compressed, control, or breaking a rule) and never raises for\n"
"the peer's faults. Raises ValueError for an offset outside [0, len(buf)].");

/* Payloads up to this size are unmasked on the stack before decoding text. */
#define SCAN_STACK 512

/* The text (b0 0x81) or binary (0x82) frame at p as str or bytes, payload
 * unmasked; NULL with UnicodeDecodeError set for invalid UTF-8. */
static PyObject *
message_object(const uint8_t *p, Py_ssize_t header, uint64_t length, int masked)
{
    uint8_t stack[SCAN_STACK];
    PyObject *raw, *message;

    if (p[0] == 0x82) {
        return payload_bytes(p, header, length, masked);
    }
    if (!masked) {
        return PyUnicode_DecodeUTF8((const char *)p + header, (Py_ssize_t)length, NULL);
    }
    if (length <= SCAN_STACK) {
        do_mask(p + header, stack, (Py_ssize_t)length, p + header - 4);
        return PyUnicode_DecodeUTF8((const char *)stack, (Py_ssize_t)length, NULL);
    }
    raw = payload_bytes(p, header, length, 1);
    if (raw == NULL) {
        return NULL;
    }
    message = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), (Py_ssize_t)length, NULL);
    Py_DECREF(raw);
    return message;
}

static PyObject *
scan_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    scan_args a;
    Py_ssize_t pos, end;
    const uint8_t *base;
    uint8_t want_mask;
    PyObject *messages = NULL, *result;

    if (get_scan_args("scan_messages", args, nargs, 4, &a) < 0) {
        return NULL;
    }
    messages = PyList_New(0);
    if (messages == NULL) {
        goto error;
    }
    want_mask = a.require_mask ? 0x80 : 0;
    base = (const uint8_t *)a.buf.buf;
    pos = a.pos;
    end = a.buf.len;
    while (end - pos >= 2) {
        const uint8_t *p = base + pos;
        uint8_t b0 = p[0], b1 = p[1];
        Py_ssize_t header;
        uint64_t length;
        PyObject *message;

        /* A whole text (0x81) or binary (0x82) message in one frame, else stop. */
        if ((b0 != 0x81 && b0 != 0x82) || (b1 & 0x80) != want_mask) break;
        if (!frame_extent(p, end - pos, a.require_mask, &length, &header)) break;
        if (!a.unbounded && (long long)length > a.max_size) break;

        message = message_object(p, header, length, a.require_mask);
        if (message == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                goto error;
            }
            PyErr_Clear(); /* invalid UTF-8: the frame parser reports it */
            break;
        }
        if (PyList_Append(messages, message) < 0) {
            Py_DECREF(message);
            goto error;
        }
        Py_DECREF(message);
        pos += header + (Py_ssize_t)length;
    }
    PyBuffer_Release(&a.buf);
    result = Py_BuildValue("(Nn)", messages, pos);
    return result;

error:
    Py_XDECREF(messages);
    PyBuffer_Release(&a.buf);
    return NULL;
}

/* ------------------------------------------------------ request head */

/* RFC 9110 section 5.6.2 tchar; section 5.5: the CTLs a field value may not
 * hold; RFC 9112 section 3.2: bytes a request-target may not hold. Built
 * from the same definitions as the pure twin's tables. */
static uint8_t head_tchar[256];
static uint8_t head_ctl[256];
static uint8_t head_target_bad[256];

static void
head_tables_init(void)
{
    const char *tchar =
        "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~";
    int c;

    for (; *tchar; tchar++) {
        head_tchar[(uint8_t)*tchar] = 1;
    }
    for (c = 0; c < 256; c++) {
        head_ctl[c] = (c < 0x20 && c != 0x09) || c == 0x7F;
        head_target_bad[c] = c <= 0x20 || c >= 0x7F;
    }
}

static int
head_all_tchar(const uint8_t *p, Py_ssize_t n)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        if (!head_tchar[p[i]]) {
            return 0;
        }
    }
    return 1;
}

/* The first "\r\n\r\n" in p[0:n], or -1. */
static Py_ssize_t
head_find_end(const uint8_t *p, Py_ssize_t n)
{
    const uint8_t *s = p, *stop;

    if (n < 4) {
        return -1;
    }
    stop = p + n - 3;
    while (s < stop) {
        s = memchr(s, '\r', (size_t)(stop - s));
        if (s == NULL) {
            return -1;
        }
        if (s[1] == '\n' && s[2] == '\r' && s[3] == '\n') {
            return s - p;
        }
        s++;
    }
    return -1;
}

PyDoc_STRVAR(parse_head_doc,
"parse_head(data, max_head, max_headers, max_line, names, values, /)\n"
"--\n\n"
"Parse a complete, usual HTTP/1.1 request head at the start of data:\n"
"(end, (method, target, 'HTTP/1.1'), pairs, index), or None when it is\n"
"incomplete or unusual (see shardws.speedups.py_parse_head).");

static PyObject *
parse_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *data, *names, *values;
    PyObject *pairs = NULL, *index = NULL, *request_line = NULL, *result = NULL;
    Py_ssize_t max_head, max_headers, max_line, len, end, pos, line_end, count;
    const uint8_t *p;

    if (check_nargs("parse_head", nargs, 6, 6) < 0) {
        return NULL;
    }
    data = args[0];
    if (!PyBytes_CheckExact(data)) {
        PyErr_Format(PyExc_TypeError,
                     "parse_head() argument 'data' must be bytes, not '%.200s'",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    /* operator.index() in the twin; out of range values clip (same answer). */
    max_head = PyNumber_AsSsize_t(args[1], NULL);
    if (max_head == -1 && PyErr_Occurred()) {
        return NULL;
    }
    max_headers = PyNumber_AsSsize_t(args[2], NULL);
    if (max_headers == -1 && PyErr_Occurred()) {
        return NULL;
    }
    max_line = PyNumber_AsSsize_t(args[3], NULL);
    if (max_line == -1 && PyErr_Occurred()) {
        return NULL;
    }
    names = args[4];
    values = args[5];
    if (!PyDict_CheckExact(names)) {
        PyErr_Format(PyExc_TypeError,
                     "parse_head() argument 'names' must be dict, not '%.200s'",
                     Py_TYPE(names)->tp_name);
        return NULL;
    }
    if (!PyDict_CheckExact(values)) {
        PyErr_Format(PyExc_TypeError,
                     "parse_head() argument 'values' must be dict, not '%.200s'",
                     Py_TYPE(values)->tp_name);
        return NULL;
    }
    if (max_head < 0 || max_headers < 0 || max_line < 0) {
        Py_RETURN_NONE;
    }
    p = (const uint8_t *)PyBytes_AS_STRING(data);
    len = PyBytes_GET_SIZE(data);
    end = head_find_end(p, len < max_head ? len : max_head);
    if (end < 0) {
        Py_RETURN_NONE;
    }
    /* Lines split on CRLF: each at most max_line bytes, no other CTL. */
    count = 0;
    pos = 0;
    for (;;) {
        Py_ssize_t i = pos;
        while (i < end && !(p[i] == '\r' && i + 1 < end && p[i + 1] == '\n')) {
            if (head_ctl[p[i]]) {
                Py_RETURN_NONE;
            }
            i++;
        }
        if (i - pos > max_line) {
            Py_RETURN_NONE;
        }
        if (i >= end) {
            break;
        }
        count++;
        pos = i + 2;
    }
    if (count > max_headers) {
        Py_RETURN_NONE;
    }
    /* The request line: token SP target SP HTTP/1.1 */
    {
        const uint8_t *sp1, *sp2, *line = p;
        Py_ssize_t n = (const uint8_t *)memchr(p, '\r', (size_t)end + 1) - p;
        PyObject *method, *target, *version;

        if (end == 0 || count == 0) {
            n = end;
        }
        sp1 = memchr(line, ' ', (size_t)n);
        if (sp1 == NULL) {
            Py_RETURN_NONE;
        }
        sp2 = memchr(sp1 + 1, ' ', (size_t)(line + n - sp1 - 1));
        if (sp2 == NULL || memchr(sp2 + 1, ' ', (size_t)(line + n - sp2 - 1)) != NULL) {
            Py_RETURN_NONE;
        }
        if (sp1 == line || !head_all_tchar(line, sp1 - line) || sp2 == sp1 + 1) {
            Py_RETURN_NONE;
        }
        {
            const uint8_t *t = sp1 + 1;
            Py_ssize_t tn = sp2 - t, i;
            int scheme = 0;
            for (i = 0; i < tn; i++) {
                if (head_target_bad[t[i]]) {
                    Py_RETURN_NONE;
                }
                if (t[i] == ':' && i + 2 < tn && t[i + 1] == '/' && t[i + 2] == '/') {
                    scheme = 1;
                }
            }
            if (t[0] != '/' && !scheme) {
                Py_RETURN_NONE;
            }
        }
        if (line + n - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.1", 8) != 0) {
            Py_RETURN_NONE;
        }
        method = PyUnicode_DecodeASCII((const char *)line, sp1 - line, NULL);
        if (method == NULL) {
            return NULL;
        }
        target = PyUnicode_DecodeASCII((const char *)sp1 + 1, sp2 - sp1 - 1, NULL);
        if (target == NULL) {
            Py_DECREF(method);
            return NULL;
        }
        version = PyUnicode_FromStringAndSize("HTTP/1.1", 8);
        if (version == NULL) {
            Py_DECREF(method);
            Py_DECREF(target);
            return NULL;
        }
        request_line = PyTuple_Pack(3, method, target, version);
        Py_DECREF(method);
        Py_DECREF(target);
        Py_DECREF(version);
        if (request_line == NULL) {
            return NULL;
        }
        pos = n + 2;
    }
    pairs = PyList_New(0);
    index = PyDict_New();
    if (pairs == NULL || index == NULL) {
        goto error;
    }
    /* Header lines: pos is the start of each, up to end. */
    while (count-- > 0) {
        const uint8_t *line = p + pos, *colon, *v, *ve;
        PyObject *name_bytes, *known, *text, *key, *raw_bytes, *value, *pair, *found;
        Py_ssize_t n;

        line_end = pos;
        while (line_end < end && !(p[line_end] == '\r' && p[line_end + 1] == '\n')) {
            line_end++;
        }
        n = line_end - pos;
        colon = memchr(line, ':', (size_t)n);
        name_bytes = PyBytes_FromStringAndSize(
            (const char *)line, colon == NULL ? n : colon - line);
        if (name_bytes == NULL) {
            goto error;
        }
        known = PyDict_GetItemWithError(names, name_bytes); /* borrowed */
        if (known == NULL && PyErr_Occurred()) {
            Py_DECREF(name_bytes);
            goto error;
        }
        if (known != NULL && known != Py_None) { /* the twin: names.get(name) is not None */
            Py_DECREF(name_bytes);
            if (!PyTuple_CheckExact(known) || PyTuple_GET_SIZE(known) != 2
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(known, 0))
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(known, 1))) {
                PyErr_SetString(PyExc_TypeError,
                                "parse_head() entries of 'names' must be tuples of two str");
                goto error;
            }
            text = PyTuple_GET_ITEM(known, 0);
            key = PyTuple_GET_ITEM(known, 1);
            Py_INCREF(text);
            Py_INCREF(key);
        }
        else {
            Py_ssize_t nn = PyBytes_GET_SIZE(name_bytes), i;
            char *lower;
            Py_DECREF(name_bytes);
            if (nn == 0 || !head_all_tchar(line, nn)) {
                Py_CLEAR(pairs);
                Py_CLEAR(index);
                Py_CLEAR(request_line);
                Py_RETURN_NONE;
            }
            text = PyUnicode_DecodeASCII((const char *)line, nn, NULL);
            if (text == NULL) {
                goto error;
            }
            key = PyUnicode_New(nn, 127);
            if (key == NULL) {
                Py_DECREF(text);
                goto error;
            }
            lower = (char *)PyUnicode_1BYTE_DATA(key);
            for (i = 0; i < nn; i++) {
                uint8_t c = line[i];
                lower[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            }
        }
        if (colon == NULL) {
            Py_DECREF(text);
            Py_DECREF(key);
            Py_CLEAR(pairs);
            Py_CLEAR(index);
            Py_CLEAR(request_line);
            Py_RETURN_NONE;
        }
        v = colon + 1;
        ve = line + n;
        raw_bytes = PyBytes_FromStringAndSize((const char *)v, ve - v);
        if (raw_bytes == NULL) {
            goto error_text;
        }
        value = PyDict_GetItemWithError(values, raw_bytes); /* borrowed */
        Py_DECREF(raw_bytes);
        if (value == NULL && PyErr_Occurred()) {
            goto error_text;
        }
        if (value == NULL || value == Py_None) { /* the twin: values.get(raw) is None */
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            value = PyUnicode_DecodeLatin1((const char *)v, ve - v, NULL);
            if (value == NULL) {
                goto error_text;
            }
        }
        else if (!PyUnicode_CheckExact(value)) {
            PyErr_SetString(PyExc_TypeError, "parse_head() entries of 'values' must be str");
            goto error_text;
        }
        else {
            Py_INCREF(value);
        }
        pair = PyTuple_Pack(2, text, value);
        Py_DECREF(text);
        if (pair == NULL || PyList_Append(pairs, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(key);
            Py_DECREF(value);
            goto error;
        }
        Py_DECREF(pair);
        found = PyDict_GetItemWithError(index, key); /* borrowed */
        if (found != NULL) {
            int rc = PyList_Append(found, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) {
                goto error;
            }
        }
        else {
            PyObject *list;
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                Py_DECREF(value);
                goto error;
            }
            list = PyList_New(1);
            if (list == NULL) {
                Py_DECREF(key);
                Py_DECREF(value);
                goto error;
            }
            PyList_SET_ITEM(list, 0, value); /* steals */
            if (PyDict_SetItem(index, key, list) < 0) {
                Py_DECREF(list);
                Py_DECREF(key);
                goto error;
            }
            Py_DECREF(list);
            Py_DECREF(key);
        }
        pos = line_end + 2;
        continue;

    error_text:
        Py_DECREF(text);
        Py_DECREF(key);
        goto error;
    }
    result = Py_BuildValue("(nNNN)", end, request_line, pairs, index);
    return result;

error:
    Py_XDECREF(pairs);
    Py_XDECREF(index);
    Py_XDECREF(request_line);
    return NULL;
}

/* ------------------------------------------- ServerConnection fast paths */

/* C versions of the hot methods of shardws.asyncio.connection.ServerConnection,
 * bound by connection_fast_paths(). They read and
 * write the instances' __slots__ directly, at the offsets of the slot
 * descriptors, and only take the common case: a whole uncompressed message
 * received on an OPEN connection, a str or bytes sent on one. Anything else
 * -- a handshake in progress, a control, fragmented or compressed frame, a
 * partial frame, a closing connection, a subclass that redefines a slot --
 * calls the Python method they replace, renamed with a "_py" suffix, which
 * stays the specification (SHARDWS_NO_SPEEDUPS=1 runs it alone). */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static PyObject *small_zero; /* the cached int 0 that every `x = 0` stores */

/* Slot offsets; 0 until connection_fast_paths() bound them. */
static struct {
    PyTypeObject *conn_type, *protocol_type, *parser_type, *options_type, *deque_type;
    PyObject *stats, *open_state, *deque_append, *deque_popleft, *checked_types;
    /* the methods done() and set_result() of the first future type seen */
    PyTypeObject *future_type;
    PyObject *future_done, *future_set_result;
    Py_ssize_t split_at;
    /* ServerConnection */
    Py_ssize_t c_protocol, c_transport, c_fragmented, c_write_paused, c_corked, c_cork_limit,
        c_flush_scheduled, c_loop, c_messages, c_queued_bytes, c_recv_waiter, c_server,
        c_options, c_queue_full, c_closed_waiter, c_fail_handle, c_join_writes, c_sock_fd,
        c_broadcast_epoch;
    /* protocol.connection.Connection */
    Py_ssize_t p_state, p_discard, p_msg_opcode, p_parser, p_out, p_plain, p_send_fragmented,
        p_pending_pongs, p_share_key;
    /* protocol.frames.FrameParser */
    Py_ssize_t f_max_size, f_buf, f_pos, f_ready, f_next, f_base;
    /* server._Options */
    Py_ssize_t o_max_queue_high, o_read_limit_high;
    /* registry.Stats */
    Py_ssize_t s_messages_in, s_messages_out;
} fp;

static PyObject *str_data_received_py, *str_send_py, *str_flush_py,
    *str_queue_overflow, *str_closing_started, *str_drain, *str_done, *str_set_result,
    *str_write, *str_writelines, *str_is_closing, *str_call_soon, *str_to_flush,
    *str_flush_corked, *str_text, *str_recv_py, *str_decode, *str_create_future,
    *str_future_blocking, *str_resume_if_drained, *str_receive, *str_get_write_buffer_size;

/* Every slot the fast paths use: the class it belongs to, its name, where
 * its offset is kept. */
enum { OF_CONNECTION, OF_PROTOCOL, OF_PARSER, OF_OPTIONS, OF_STATS, N_CLASSES };
static const struct {
    int cls;
    const char *name;
    Py_ssize_t *off;
} slot_table[] = {
    {OF_CONNECTION, "_protocol", &fp.c_protocol},
    {OF_CONNECTION, "_transport", &fp.c_transport},
    {OF_CONNECTION, "_fragmented", &fp.c_fragmented},
    {OF_CONNECTION, "_write_paused", &fp.c_write_paused},
    {OF_CONNECTION, "_corked", &fp.c_corked},
    {OF_CONNECTION, "_cork_limit", &fp.c_cork_limit},
    {OF_CONNECTION, "_flush_scheduled", &fp.c_flush_scheduled},
    {OF_CONNECTION, "_loop", &fp.c_loop},
    {OF_CONNECTION, "_messages", &fp.c_messages},
    {OF_CONNECTION, "_queued_bytes", &fp.c_queued_bytes},
    {OF_CONNECTION, "_recv_waiter", &fp.c_recv_waiter},
    {OF_CONNECTION, "_server", &fp.c_server},
    {OF_CONNECTION, "_options", &fp.c_options},
    {OF_CONNECTION, "_queue_full", &fp.c_queue_full},
    {OF_CONNECTION, "_closed_waiter", &fp.c_closed_waiter},
    {OF_CONNECTION, "_fail_handle", &fp.c_fail_handle},
    {OF_CONNECTION, "_join_writes", &fp.c_join_writes},
    {OF_CONNECTION, "_sock_fd", &fp.c_sock_fd},
    {OF_CONNECTION, "_broadcast_epoch", &fp.c_broadcast_epoch},
    {OF_PROTOCOL, "state", &fp.p_state},
    {OF_PROTOCOL, "_discard", &fp.p_discard},
    {OF_PROTOCOL, "_msg_opcode", &fp.p_msg_opcode},
    {OF_PROTOCOL, "_parser", &fp.p_parser},
    {OF_PROTOCOL, "_out", &fp.p_out},
    {OF_PROTOCOL, "_plain", &fp.p_plain},
    {OF_PROTOCOL, "_send_fragmented", &fp.p_send_fragmented},
    {OF_PROTOCOL, "_pending_pongs", &fp.p_pending_pongs},
    {OF_PROTOCOL, "frame_share_key", &fp.p_share_key},
    {OF_PARSER, "max_size", &fp.f_max_size},
    {OF_PARSER, "_buf", &fp.f_buf},
    {OF_PARSER, "_pos", &fp.f_pos},
    {OF_PARSER, "_ready", &fp.f_ready},
    {OF_PARSER, "_next", &fp.f_next},
    {OF_PARSER, "_base", &fp.f_base},
    {OF_OPTIONS, "max_queue_high", &fp.o_max_queue_high},
    {OF_OPTIONS, "read_limit_high", &fp.o_read_limit_high},
    {OF_STATS, "messages_in", &fp.s_messages_in},
    {OF_STATS, "messages_out", &fp.s_messages_out},
};
#define N_SLOTS (sizeof(slot_table) / sizeof(slot_table[0]))

/* waiter.done() / waiter.set_result(value), through the unbound methods of
 * its type when it is the usual future type (no lookup per call). */
static PyObject *
future_call(PyObject *future, int set, PyObject *value)
{
    PyObject *args[2] = {future, value};

    if (Py_TYPE(future) != fp.future_type) {
        if (fp.future_type == NULL) {
            PyObject *done = PyObject_GetAttrString((PyObject *)Py_TYPE(future), "done");
            PyObject *set_result = done == NULL ? NULL : PyObject_GetAttrString(
                (PyObject *)Py_TYPE(future), "set_result");
            if (set_result != NULL) {
                fp.future_type = (PyTypeObject *)Py_NewRef(Py_TYPE(future));
                fp.future_done = done;
                fp.future_set_result = set_result;
            }
            else {
                Py_XDECREF(done);
                PyErr_Clear();
            }
        }
        if (Py_TYPE(future) != fp.future_type) {
            return set ? PyObject_CallMethodOneArg(future, str_set_result, value)
                       : PyObject_CallMethodNoArgs(future, str_done);
        }
    }
    return PyObject_Vectorcall(set ? fp.future_set_result : fp.future_done, args, set ? 2 : 1,
                               NULL);
}

/* The offset of the __slots__ member `name` of `cls` (a T_OBJECT_EX slot). */
static int
slot_offset(PyObject *cls, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttrString(cls, name);

    if (descr == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not a __slots__ member", cls, name);
        Py_DECREF(descr);
        return -1;
    }
    *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return 0;
}

/* Replace the object in a slot (new reference taken). */
static inline void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = Py_NewRef(value);
    Py_XDECREF(old);
}

/* Steals `value`; returns -1 (value NULL: an exception is set). */
static inline int
slot_set_new(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old;

    if (value == NULL) {
        return -1;
    }
    old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
    return 0;
}

/* A slot holding an int, or -1 with no exception when it holds anything else. */
static inline Py_ssize_t
slot_ssize(PyObject *obj, Py_ssize_t off)
{
    PyObject *v = SLOT(obj, off);
    Py_ssize_t n;

    if (v == NULL || !PyLong_CheckExact(v)) {
        return -1;
    }
    n = PyLong_AsSsize_t(v);
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    return n;
}

/* Add n to the int in a slot; -1 on error. */
static int
slot_add(PyObject *obj, Py_ssize_t off, Py_ssize_t n)
{
    PyObject *v = SLOT(obj, off), *delta, *sum;

    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "counter slot is not set");
        return -1;
    }
    delta = PyLong_FromSsize_t(n);
    if (delta == NULL) {
        return -1;
    }
    sum = PyNumber_Add(v, delta);
    Py_DECREF(delta);
    return slot_set_new(obj, off, sum);
}

/* self is a ServerConnection whose slots lie where the bound offsets say:
 * the class itself, or a subclass that does not redefine them. */
static int
conn_checked(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject *known;

    if (tp == fp.conn_type) {
        return 1;
    }
    if (fp.conn_type == NULL || !PyType_IsSubtype(tp, fp.conn_type)) {
        return 0;
    }
    known = PyDict_GetItemWithError(fp.checked_types, (PyObject *)tp);
    if (known != NULL) {
        return known == Py_True;
    }
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    {
        int same = 1;
        for (size_t i = 0; i < N_SLOTS && same; i++) {
            PyObject *mine, *base;
            if (slot_table[i].cls != OF_CONNECTION) continue;
            mine = PyObject_GetAttrString((PyObject *)tp, slot_table[i].name);
            base = PyObject_GetAttrString((PyObject *)fp.conn_type, slot_table[i].name);
            same = mine != NULL && mine == base;
            Py_XDECREF(mine);
            Py_XDECREF(base);
        }
        PyErr_Clear();
        if (PyDict_SetItem(fp.checked_types, (PyObject *)tp, same ? Py_True : Py_False) < 0) {
            PyErr_Clear();
        }
        return same;
    }
}

/* The protocol of an OPEN connection, if it is the class the offsets belong to. */
static inline PyObject *
open_protocol(PyObject *self)
{
    PyObject *protocol = SLOT(self, fp.c_protocol);

    if (protocol == NULL || !Py_IS_TYPE(protocol, fp.protocol_type)
        || SLOT(protocol, fp.p_state) != fp.open_state) {
        return NULL;
    }
    return protocol;
}

/* -- receiving */

/* How many whole single-frame text/binary messages make up all of data
 * (masked, within max_size); -1 when data holds anything else. Headers only:
 * text is validated when decoded. */
static Py_ssize_t
count_whole_messages(const uint8_t *base, Py_ssize_t end, int unbounded, long long max_size)
{
    Py_ssize_t pos = 0, count = 0;

    while (pos < end) {
        const uint8_t *p = base + pos;
        Py_ssize_t header;
        uint64_t length;

        if (end - pos < 2 || (p[0] != 0x81 && p[0] != 0x82) || !(p[1] & 0x80)) return -1;
        if (!frame_extent(p, end - pos, 1, &length, &header)) return -1;
        if (!unbounded && (long long)length > max_size) return -1;
        pos += header + (Py_ssize_t)length;
        count++;
    }
    return count;
}

static PyObject *conn_flush(PyObject *self, PyObject *unused);

/* 1: data was taken by the fast path; 0: the Python method must take it;
 * -1: error. */
static int
receive_fast(PyObject *self, PyObject *data)
{
    PyObject *protocol, *parser, *buf, *max_obj, *ready, *messages, *waiter, *options;
    PyObject *stack_msgs[16], **msgs = stack_msgs;
    Py_ssize_t buf_len, pos, next, count, end, added_len = 0, i;
    long long max_size = 0;
    int unbounded, ok = -1;
    const uint8_t *base;

    if (!PyBytes_CheckExact(data) || !conn_checked(self)) return 0;
    if ((protocol = open_protocol(self)) == NULL) return 0;
    if (SLOT(protocol, fp.p_discard) != Py_False) return 0;
    if (slot_ssize(protocol, fp.p_msg_opcode) != 0) return 0;
    parser = SLOT(protocol, fp.p_parser);
    if (parser == NULL || !Py_IS_TYPE(parser, fp.parser_type)) return 0;
    /* FrameParser.feed_messages' condition: nothing buffered or decoded ahead */
    buf = SLOT(parser, fp.f_buf);
    if (buf != NULL && PyBytes_CheckExact(buf)) buf_len = PyBytes_GET_SIZE(buf);
    else if (buf != NULL && PyByteArray_CheckExact(buf)) buf_len = PyByteArray_GET_SIZE(buf);
    else return 0;
    pos = slot_ssize(parser, fp.f_pos);
    if (pos != buf_len) return 0;
    ready = SLOT(parser, fp.f_ready);
    next = slot_ssize(parser, fp.f_next);
    if (ready == NULL || !PyList_CheckExact(ready) || next < PyList_GET_SIZE(ready)) return 0;
    max_obj = SLOT(parser, fp.f_max_size);
    if (max_obj == Py_None) {
        unbounded = 1;
    }
    else if (max_obj != NULL && PyLong_CheckExact(max_obj)) {
        unbounded = 0;
        max_size = PyLong_AsLongLong(max_obj);
        if (max_size == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
    }
    else return 0;
    messages = SLOT(self, fp.c_messages);
    if (messages == NULL || !Py_IS_TYPE(messages, fp.deque_type)) return 0;
    options = SLOT(self, fp.c_options);
    if (options == NULL || !Py_IS_TYPE(options, fp.options_type)) return 0;

    base = (const uint8_t *)PyBytes_AS_STRING(data);
    end = PyBytes_GET_SIZE(data);
    count = count_whole_messages(base, end, unbounded, max_size);
    if (count <= 0) return 0;
    if (count > (Py_ssize_t)(sizeof(stack_msgs) / sizeof(stack_msgs[0]))) {
        msgs = PyMem_Malloc(sizeof(PyObject *) * (size_t)count);
        if (msgs == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    /* Decode every message first: invalid UTF-8 leaves it all to the parser. */
    pos = 0;
    for (i = 0; i < count; i++) {
        const uint8_t *p = base + pos;
        Py_ssize_t header = 0;
        uint64_t length = 0;
        PyObject *message;

        frame_extent(p, end - pos, 1, &length, &header);
        message = message_object(p, header, length, 1);
        if (message == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                ok = 0; /* the parser reports it */
            }
            while (i > 0) {
                Py_DECREF(msgs[--i]);
            }
            goto done;
        }
        /* len() of the message, as _process_events counts _queued_bytes */
        added_len += p[0] == 0x82 ? (Py_ssize_t)length : PyUnicode_GET_LENGTH(message);
        msgs[i] = message;
        pos += header + (Py_ssize_t)length;
    }

    /* FrameParser.feed_messages: the whole read is consumed. */
    if (slot_add(parser, fp.f_base, buf_len) < 0) goto drop;
    slot_set(parser, fp.f_buf, data);
    if (slot_set_new(parser, fp.f_pos, PyLong_FromSsize_t(end)) < 0) goto drop;

    /* ServerConnection._process_events for messages only. */
    for (i = 0; i < count; i++) {
        PyObject *args[2] = {messages, msgs[i]};
        PyObject *r = PyObject_Vectorcall(fp.deque_append, args, 2, NULL);
        Py_DECREF(msgs[i]);
        msgs[i] = NULL;
        if (r == NULL) {
            for (i++; i < count; i++) Py_DECREF(msgs[i]);
            goto done;
        }
        Py_DECREF(r);
    }
    if (slot_add(self, fp.c_queued_bytes, added_len) < 0) goto done;
    if (slot_add(fp.stats, fp.s_messages_in, count) < 0) goto done;
    waiter = SLOT(self, fp.c_recv_waiter);
    if (waiter != NULL && waiter != Py_None) {
        PyObject *r = future_call(waiter, 0, NULL);
        int is_done;
        if (r == NULL) goto done;
        is_done = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (is_done < 0) goto done;
        if (!is_done) {
            r = future_call(waiter, 1, Py_None);
            if (r == NULL) goto done;
            Py_DECREF(r);
        }
    }
    {
        double high = PyFloat_AsDouble(SLOT(options, fp.o_max_queue_high));
        double bytes_high = PyFloat_AsDouble(SLOT(options, fp.o_read_limit_high));
        Py_ssize_t queued = slot_ssize(self, fp.c_queued_bytes);
        if ((high == -1.0 || bytes_high == -1.0) && PyErr_Occurred()) goto done;
        if ((double)PyObject_Length(messages) >= high || (double)queued > bytes_high) {
            PyObject *r = PyObject_CallMethodNoArgs(self, str_queue_overflow);
            if (r == NULL) goto done;
            Py_DECREF(r);
        }
    }
    /* Corked answers go out with this read (as _process_events does). */
    {
        PyObject *out = SLOT(protocol, fp.p_out);
        if (out == NULL || !PyList_CheckExact(out) || PyList_GET_SIZE(out)) {
            PyObject *r = conn_flush(self, NULL);
            if (r == NULL) goto done;
            Py_DECREF(r);
        }
    }
    ok = 1;
    goto done;

drop:
    for (i = 0; i < count; i++) Py_XDECREF(msgs[i]);
done:
    if (msgs != stack_msgs) PyMem_Free(msgs);
    return ok;
}

static PyObject *
conn_data_received(PyObject *self, PyObject *data)
{
    int taken = receive_fast(self, data);

    if (taken < 0) return NULL;
    if (taken) Py_RETURN_NONE;
    return PyObject_CallMethodOneArg(self, str_data_received_py, data);
}

/* self.<name>(*args, **kwargs) for a METH_FASTCALL | METH_KEYWORDS method
 * that leaves a call to the Python method it stands in for. */
static PyObject *
call_python_method(PyObject *name, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    Py_ssize_t n = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    PyObject *small[4], **stack = small, *res;

    if (n + 1 > 4) {
        stack = PyMem_Malloc(sizeof(PyObject *) * (size_t)(n + 1));
        if (stack == NULL) return PyErr_NoMemory();
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < n; i++) stack[i + 1] = args[i];
    res = PyObject_VectorcallMethod(name, stack, (size_t)nargs + 1, kwnames);
    if (stack != small) PyMem_Free(stack);
    return res;
}

/* -- writing */

/* Writing to the socket directly. A transport's write() costs a method
 * call, its own buffering logic, and on Linux a write(2), which goes through
 * the VFS layer that send(2) skips. So when the transport holds nothing and
 * is not closing, the chunks go out with one send()/sendmsg() on the socket
 * under it (the fd that connection_made() put in _sock_fd, -1 for TLS or any
 * transport that is not over a plain socket). Whatever the kernel does not
 * take -- all of it on EAGAIN or an error -- goes to the transport, which
 * buffers it, or meets the same error and reports it as it always does. The
 * bytes keep their order: nothing is sent around a non-empty buffer. */
#define MAX_DIRECT_CHUNKS 64

/* The socket to send on, -1 to write through the transport, -2 on error.
 * `open`: the caller has just seen transport.is_closing() return False. */
static int
direct_fd(PyObject *conn, PyObject *transport, int open)
{
#ifdef DIRECT_WRITES
    PyObject *v = SLOT(conn, fp.c_sock_fd);
    Py_ssize_t fd, size;
    int closing;

    if (v == NULL || !PyLong_CheckExact(v)) return -1;
    fd = PyLong_AsSsize_t(v);
    if (fd < 0 || fd > INT_MAX) {
        if (fd == -1 && PyErr_Occurred()) return -2;
        return -1;
    }
    if (!open) {
        v = PyObject_CallMethodNoArgs(transport, str_is_closing);
        if (v == NULL) return -2;
        closing = v != Py_False;
        Py_DECREF(v);
        if (closing) return -1;
    }
    v = PyObject_CallMethodNoArgs(transport, str_get_write_buffer_size);
    if (v == NULL) return -2;
    size = PyLong_CheckExact(v) ? PyLong_AsSsize_t(v) : -1;
    Py_DECREF(v);
    if (size != 0) {
        if (size == -1 && PyErr_Occurred()) return -2;
        return -1;
    }
    return (int)fd;
#else
    return -1;
#endif
}

/* transport.writelines(chunks), or transport.write(b"".join(chunks)) on a
 * connection whose _join_writes is set (see connection_made()). */
static PyObject *
write_chunks(PyObject *conn, PyObject *transport, PyObject *chunks)
{
    PyObject *joined, *r;

    if (SLOT(conn, fp.c_join_writes) == Py_False) {
        return PyObject_CallMethodOneArg(transport, str_writelines, chunks);
    }
    joined = PyBytes_FromStringAndSize(NULL, 0);
    if (joined == NULL) return NULL;
    Py_SETREF(joined, PyObject_CallMethod(joined, "join", "O", chunks));
    if (joined == NULL) return NULL;
    r = PyObject_CallMethodOneArg(transport, str_write, joined);
    Py_DECREF(joined);
    return r;
}

static PyObject *write_rest(PyObject *conn, PyObject *transport, PyObject *const *chunks,
                            Py_ssize_t n, PyObject *list, Py_ssize_t sent);

/* Write the bytes objects chunks[0..n) (`list` holds them when n > 1):
 * directly while direct_fd() allows, the rest through the transport. */
static PyObject *
conn_write(PyObject *conn, PyObject *transport, PyObject *const *chunks, Py_ssize_t n,
           PyObject *list, int open)
{
    Py_ssize_t sent = 0;
#ifdef DIRECT_WRITES
    Py_ssize_t i;
#endif

#ifdef DIRECT_WRITES
    if (n <= MAX_DIRECT_CHUNKS) {
        struct iovec iov[MAX_DIRECT_CHUNKS];
        Py_ssize_t total = 0;
        int fd;

        for (i = 0; i < n; i++) {
            if (!PyBytes_CheckExact(chunks[i])) break;
            iov[i].iov_base = PyBytes_AS_STRING(chunks[i]);
            iov[i].iov_len = (size_t)PyBytes_GET_SIZE(chunks[i]);
            total += PyBytes_GET_SIZE(chunks[i]);
        }
        if (i == n && total > 0) {
            fd = direct_fd(conn, transport, open);
            if (fd == -2) return NULL;
            if (fd >= 0) {
                ssize_t w;
                do {
                    if (n == 1) {
                        w = send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
                    }
                    else {
                        struct msghdr msg;
                        memset(&msg, 0, sizeof(msg));
                        msg.msg_iov = iov;
                        msg.msg_iovlen = (size_t)n;
                        w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                    }
                } while (w < 0 && errno == EINTR);
                if (w == total) Py_RETURN_NONE;
                if (w > 0) sent = w;
            }
        }
    }
#endif
    return write_rest(conn, transport, chunks, n, list, sent);
}

/* Hand the transport what the socket did not take of chunks[0..n): all of
 * it when `sent` is 0, else the rest of a partial send (a big tail as a
 * view of the chunk, not a copy). `list` holds the chunks when n > 1. */
static PyObject *
write_rest(PyObject *conn, PyObject *transport, PyObject *const *chunks, Py_ssize_t n,
           PyObject *list, Py_ssize_t sent)
{
    Py_ssize_t i;
    PyObject *rest, *r;

    if (sent == 0) {
        if (n == 1) return PyObject_CallMethodOneArg(transport, str_write, chunks[0]);
        return write_chunks(conn, transport, list);
    }
    for (i = 0; sent >= PyBytes_GET_SIZE(chunks[i]); i++) sent -= PyBytes_GET_SIZE(chunks[i]);
    rest = PyList_New(n - i);
    if (rest == NULL) return NULL;
    if (PyBytes_GET_SIZE(chunks[i]) - sent < 65536) {
        PyList_SET_ITEM(rest, 0, PyBytes_FromStringAndSize(
            PyBytes_AS_STRING(chunks[i]) + sent, PyBytes_GET_SIZE(chunks[i]) - sent));
    }
    else {
        PyObject *view = PyMemoryView_FromObject(chunks[i]);
        PyList_SET_ITEM(rest, 0, view == NULL ? NULL : PySequence_GetSlice(
            view, sent, PyBytes_GET_SIZE(chunks[i])));
        Py_XDECREF(view);
    }
    if (PyList_GET_ITEM(rest, 0) == NULL) {
        Py_DECREF(rest);
        return NULL;
    }
    for (Py_ssize_t j = i + 1; j < n; j++) PyList_SET_ITEM(rest, j - i, Py_NewRef(chunks[j]));
    if (n - i == 1) r = PyObject_CallMethodOneArg(transport, str_write, PyList_GET_ITEM(rest, 0));
    else r = write_chunks(conn, transport, rest);
    Py_DECREF(rest);
    return r;
}

static int batch_write(PyObject *conn, PyObject *transport, PyObject *frame, PyObject *chunks,
                       int open);
static int batch_full(void);
static int batch_submit(PyObject *frame, PyObject *failed, Py_ssize_t *sent);

/* ServerConnection._flush: write what the protocol queued. `open`: as for
 * direct_fd(). `queue`: the caller holds the batch (batch_hold()), and the
 * write joins it when it can; batch_submit() then finishes it, the closing
 * check below included. */
static PyObject *
flush_queued(PyObject *self, int open, int queue)
{
    PyObject *protocol, *out, *transport, *r;

    if (!conn_checked(self)) goto slow;
    protocol = SLOT(self, fp.c_protocol);
    if (protocol == NULL || !Py_IS_TYPE(protocol, fp.protocol_type)) goto slow;
    out = SLOT(protocol, fp.p_out);
    transport = SLOT(self, fp.c_transport);
    if (out == NULL || !PyList_CheckExact(out) || transport == NULL) goto slow;
    if (SLOT(self, fp.c_join_writes) != Py_False && SLOT(self, fp.c_join_writes) != Py_True)
        goto slow;
    if (slot_set_new(self, fp.c_corked, PyLong_FromLong(0)) < 0) return NULL;
    if (PyList_GET_SIZE(out)) {
        /* Connection.data_to_send */
        Py_INCREF(out);
        if (slot_set_new(protocol, fp.p_out, PyList_New(0)) < 0
            || slot_set_new(protocol, fp.p_pending_pongs, PyLong_FromLong(0)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (queue) {
            int queued = batch_write(self, transport, NULL, out, open);
            if (queued > 0) { /* the batch took `out` */
                if (batch_full() && batch_submit(NULL, NULL, NULL) < 0) return NULL;
                Py_RETURN_NONE;
            }
            if (queued < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        r = conn_write(self, transport, &PyList_GET_ITEM(out, 0), PyList_GET_SIZE(out), out, open);
        Py_DECREF(out);
        if (r == NULL) return NULL;
        Py_DECREF(r);
    }
    if (SLOT(protocol, fp.p_state) != fp.open_state) {
        return PyObject_CallMethodNoArgs(self, str_closing_started);
    }
    Py_RETURN_NONE;

slow:
    return PyObject_CallMethodNoArgs(self, str_flush_py);
}

static PyObject *
conn_flush(PyObject *self, PyObject *unused)
{
    return flush_queued(self, 0, 0);
}

/* -- batched sends */

/* The direct writes of a broadcast, and those of the end of a loop
 * iteration (Server._flush_corked), go to the kernel in batches. On Linux
 * 5.19 or later each one becomes an IORING_OP_SEND (one chunk) or
 * IORING_OP_SENDMSG (up to IOV_PER_SEND chunks) in one io_uring submission
 * queue, and one io_uring_enter() hands the kernel up to BATCH of them: one
 * system call instead of one each. The sockets are non-blocking and each
 * send carries MSG_DONTWAIT, so each one completes within that call -- sent,
 * in part, or failed with EAGAIN or an error -- exactly as conn_write()'s
 * send() would, and the same rules follow: what the kernel did not take goes
 * to the transport. A batch holds at most one write per connection, and
 * between a connection's checks (direct_fd()) and the batch's submission
 * only other connections' checks and writes run: before a call into code
 * that could write to any connection (deliver(), failed(), a subclass's
 * _flush()), the holder submits the batch.
 *
 * The ring belongs to the process that set it up (a forked child sets up
 * its own: ring_forked()) and to one holder at a time: a caller that finds it
 * held (another thread, or a broadcast from inside a callback) writes one by
 * one. Where io_uring is missing or refused (older kernel, seccomp, the
 * kernel.io_uring_disabled sysctl), or batched_sends(False) turned it off,
 * every write is one send(), as before. */
#define BATCH 256
#define IOV_PER_SEND 8

static int batching_on = 1;              /* batched_sends(flag) */
static unsigned long long batched_count; /* sends that went through a ring */

#ifdef BATCHED_SENDS
static struct {
    int fd;      /* -1: none set up */
    int failed;  /* io_uring_setup() or its mmap() failed in this process: no retry */
    int forked;  /* this process is a fork of the one that set the ring up */
    int busy;    /* held */
    int atfork;  /* ring_forked() is registered */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_len, cq_len, sqes_len;
} ring = {.fd = -1};

/* The holder's writes waiting for their submission. */
typedef struct {
    PyObject *conn, *transport;
    PyObject *chunks; /* the connection's queued output (a list of bytes); NULL: the frame */
    Py_ssize_t total;
} Send;

static struct {
    Py_ssize_t n;
    unsigned tail; /* the submission queue's tail: the holder's until submitted */
    Send send[BATCH];
    struct msghdr msg[BATCH];
    struct iovec iov[BATCH][IOV_PER_SEND];
    int res[BATCH];
    char known[BATCH];
} batch;

static void
ring_forked(void)
{
    ring.forked = 1;
}

/* Unmap the ring, and close its descriptor when `close_fd`: not after
 * io_uring_enter() refused it, when the number may be another file's now. */
static void
ring_release(int close_fd)
{
    if (ring.sqes != NULL && ring.sqes != MAP_FAILED) munmap(ring.sqes, ring.sqes_len);
    if (ring.cq_map != NULL && ring.cq_map != MAP_FAILED && ring.cq_map != ring.sq_map)
        munmap(ring.cq_map, ring.cq_len);
    if (ring.sq_map != NULL && ring.sq_map != MAP_FAILED) munmap(ring.sq_map, ring.sq_len);
    if (ring.fd >= 0 && close_fd) close(ring.fd);
    ring.sqes = NULL;
    ring.sq_map = ring.cq_map = NULL;
    ring.fd = -1;
}

static void *
ring_map(size_t len, off_t offset)
{
    return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd, offset);
}

/* 1 when this process has a ring to use (setting it up on first use). */
static int
ring_ready(void)
{
    struct io_uring_params p;
    char *sq, *cq;

    if (ring.fd >= 0) {
        if (!ring.forked) return 1;
        ring_release(1); /* inherited through fork(): the parent's to use */
        ring.failed = ring.forked = ring.busy = 0;
        batch.n = 0;
    }
    if (ring.failed) return 0;
    ring.failed = 1;
    if (!ring.atfork) {
        if (pthread_atfork(NULL, NULL, ring_forked) != 0) return 0;
        ring.atfork = 1;
    }
    memset(&p, 0, sizeof(p));
    /* Linux 5.19 or later: before it, a send with MSG_DONTWAIT could wait in
     * the kernel for the socket to drain, not fail with EAGAIN */
    p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    ring.fd = (int)syscall(__NR_io_uring_setup, BATCH, &p);
    if (ring.fd < 0) {
        ring.fd = -1;
        return 0;
    }
    if (p.sq_entries < BATCH) goto fail;
    ring.sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    ring.cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    ring.sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (ring.cq_len > ring.sq_len) ring.sq_len = ring.cq_len;
        ring.sq_map = ring.cq_map = ring_map(ring.sq_len, IORING_OFF_SQ_RING);
    }
    else {
        ring.sq_map = ring_map(ring.sq_len, IORING_OFF_SQ_RING);
        ring.cq_map = ring_map(ring.cq_len, IORING_OFF_CQ_RING);
    }
    ring.sqes = ring_map(ring.sqes_len, IORING_OFF_SQES);
    if (ring.sq_map == MAP_FAILED || ring.cq_map == MAP_FAILED || ring.sqes == MAP_FAILED) goto fail;
    sq = ring.sq_map;
    cq = ring.cq_map;
    ring.sq_head = (unsigned *)(sq + p.sq_off.head);
    ring.sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(sq + p.sq_off.array);
    ring.cq_head = (unsigned *)(cq + p.cq_off.head);
    ring.cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    ring.failed = ring.forked = 0;
    return 1;

fail:
    ring_release(1);
    return 0;
}
#endif

/* 1 when this process batches, with a ring already set up: recv() then
 * leaves what send() corked to the end of the loop iteration. */
static int
batching_ready(void)
{
#ifdef BATCHED_SENDS
    return batching_on && ring.fd >= 0 && !ring.forked;
#else
    return 0;
#endif
}

/* 1 when connection `conn`, about to wait in recv(), should leave what it
 * corked to Server._flush_corked(): this process batches, and the
 * connection is on the server's list of this iteration (_flush_scheduled)
 * with at least one other one, whose write then shares the system call.
 * Alone, it writes at once: nothing to share, and no wait. */
static int
batch_others(PyObject *conn)
{
    PyObject *server, *to_flush;
    int others;

    if (SLOT(conn, fp.c_flush_scheduled) != Py_True || !batching_ready()) return 0;
    server = SLOT(conn, fp.c_server);
    if (server == NULL || server == Py_None) return 0;
    to_flush = PyObject_GetAttr(server, str_to_flush);
    if (to_flush == NULL) {
        PyErr_Clear();
        return 0;
    }
    others = PyList_CheckExact(to_flush) && PyList_GET_SIZE(to_flush) >= 2;
    Py_DECREF(to_flush);
    return others;
}

/* 1: the caller now holds the ring and `batch`, until batch_release(). */
static int
batch_hold(void)
{
#ifdef BATCHED_SENDS
    if (batching_on && ring_ready() && !ring.busy) {
        ring.busy = 1;
        batch.n = 0;
        batch.tail = *ring.sq_tail;
        return 1;
    }
#endif
    return 0;
}

static void
batch_release(void)
{
#ifdef BATCHED_SENDS
    ring.busy = 0;
#endif
}

#ifdef BATCHED_SENDS
/* Queue a write of `total` bytes on fd: the bytes object `frame` (chunks
 * NULL), or the bytes objects of the list `chunks` (a reference the batch
 * takes over; at most IOV_PER_SEND of them). */
static void
batch_add(int fd, PyObject *frame, PyObject *chunks, Py_ssize_t total, PyObject *conn,
          PyObject *transport)
{
    Py_ssize_t i = batch.n, k;
    unsigned idx = batch.tail & *ring.sq_mask;
    struct io_uring_sqe *sqe = &ring.sqes[idx];

    memset(sqe, 0, sizeof(*sqe));
    sqe->fd = fd;
    sqe->msg_flags = MSG_NOSIGNAL | MSG_DONTWAIT; /* EAGAIN comes back; no poll is armed */
    sqe->user_data = (uint64_t)i;
    if (chunks == NULL || PyList_GET_SIZE(chunks) == 1) {
        PyObject *one = chunks == NULL ? frame : PyList_GET_ITEM(chunks, 0);
        sqe->opcode = IORING_OP_SEND;
        sqe->addr = (uint64_t)(uintptr_t)PyBytes_AS_STRING(one);
        sqe->len = (uint32_t)PyBytes_GET_SIZE(one);
    }
    else {
        for (k = 0; k < PyList_GET_SIZE(chunks); k++) {
            batch.iov[i][k].iov_base = PyBytes_AS_STRING(PyList_GET_ITEM(chunks, k));
            batch.iov[i][k].iov_len = (size_t)PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, k));
        }
        memset(&batch.msg[i], 0, sizeof(struct msghdr));
        batch.msg[i].msg_iov = batch.iov[i];
        batch.msg[i].msg_iovlen = (size_t)PyList_GET_SIZE(chunks);
        sqe->opcode = IORING_OP_SENDMSG;
        sqe->addr = (uint64_t)(uintptr_t)&batch.msg[i];
        sqe->len = 1;
    }
    ring.sq_array[idx] = idx;
    batch.tail++;
    batch.send[i].conn = Py_NewRef(conn);
    batch.send[i].transport = Py_NewRef(transport);
    batch.send[i].chunks = chunks;
    batch.send[i].total = total;
    batch.n++;
}
#endif

/* A connection's write raised: an Exception goes to failed(conn, exc) (0,
 * or -1 when that raised); without `failed`, or for anything else
 * (KeyboardInterrupt & co), it stays set (-1). */
static int
write_failed(PyObject *conn, PyObject *failed)
{
    PyObject *type, *exc, *tb, *r;

    if (failed == NULL || !PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (tb != NULL) PyException_SetTraceback(exc, tb);
    r = PyObject_CallFunctionObjArgs(failed, conn, exc, NULL);
    Py_XDECREF(type);
    Py_XDECREF(exc);
    Py_XDECREF(tb);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* Submit the batch and collect its completions, then finish each
 * connection's write in order: done when the kernel took it all, else the
 * rest goes to its transport (conn_write()'s rules); a connection whose
 * queued output was written (chunks) that is no longer OPEN then starts
 * closing, as after flush_queued(). Every connection of the batch is dealt
 * with even when one raises (failed(), when given, takes an Exception, as
 * in broadcast_plain()); the first error stays set (-1). `sent`, when not
 * NULL, counts the writes made. A send whose outcome cannot be known (collecting failed)
 * leaves its stream in doubt: that connection is aborted. An exception set
 * on entry is set again on return, or becomes the context of the
 * submission's own. */
static int
batch_submit(PyObject *frame, PyObject *failed, Py_ssize_t *sent)
{
#ifdef BATCHED_SENDS
    Py_ssize_t n = batch.n, taken, done = 0, i;
    int status = 0, broken = 0;
    PyObject *err_type = NULL, *err = NULL, *err_tb = NULL;
    PyObject *pending_type, *pending, *pending_tb;
    unsigned start;

    if (n == 0) return 0;
    batch.n = 0;
    PyErr_Fetch(&pending_type, &pending, &pending_tb);
    memset(batch.known, 0, (size_t)n);
    start = batch.tail - (unsigned)n; /* every earlier entry was taken, or taken back */
    __atomic_store_n(ring.sq_tail, batch.tail, __ATOMIC_RELEASE);
    for (;;) {
        long r;
        taken = (Py_ssize_t)(__atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE) - start);
        if (taken == n) break;
        /* the sends are issued, and complete, inside this call */
        r = syscall(__NR_io_uring_enter, ring.fd, (unsigned)(n - taken), 0, 0, NULL, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { /* EAGAIN, EBUSY: for now; anything else (its fd closed): for good */
            broken = r < 0 && errno != EAGAIN && errno != EBUSY;
            taken = (Py_ssize_t)(__atomic_load_n(ring.sq_head, __ATOMIC_ACQUIRE) - start);
            break;
        }
    }
    if (taken < n) { /* what was not taken is taken back, and written one by one below */
        __atomic_store_n(ring.sq_tail, start + (unsigned)taken, __ATOMIC_RELEASE);
    }
    batch.tail = start + (unsigned)taken;
    while (done < taken) {
        unsigned head = *ring.cq_head, tail = __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE);
        for (; head != tail; head++) {
            struct io_uring_cqe *cqe = &ring.cqes[head & *ring.cq_mask];
            if (cqe->user_data < (uint64_t)taken && !batch.known[cqe->user_data]) {
                batch.res[cqe->user_data] = cqe->res;
                batch.known[cqe->user_data] = 1;
                done++;
            }
        }
        __atomic_store_n(ring.cq_head, head, __ATOMIC_RELEASE);
        if (done < taken
            && syscall(__NR_io_uring_enter, ring.fd, 0, (unsigned)(taken - done),
                       IORING_ENTER_GETEVENTS, NULL, 0) < 0
            && errno != EINTR && errno != EAGAIN && errno != EBUSY) {
            break;
        }
    }
    batched_count += (unsigned long long)done;
    if (broken || done < taken) { /* the ring is not used again in this process */
        ring_release(0);
        ring.failed = 1;
    }
    for (i = 0; i < n; i++) {
        Send *s = &batch.send[i];
        PyObject *const *items = s->chunks == NULL ? &frame : &PyList_GET_ITEM(s->chunks, 0);
        Py_ssize_t count = s->chunks == NULL ? 1 : PyList_GET_SIZE(s->chunks);
        PyObject *r, *protocol;
        int wrote = 1;

        if (i < taken && batch.known[i] && batch.res[i] == s->total) {
            r = Py_NewRef(Py_None);
        }
        else if (i < taken && batch.known[i]) {
            r = write_rest(s->conn, s->transport, items, count, s->chunks,
                           batch.res[i] > 0 ? batch.res[i] : 0);
        }
        else if (i < taken) {
            r = PyObject_CallMethod(s->transport, "abort", NULL);
            wrote = 0;
        }
        else {
            r = conn_write(s->conn, s->transport, items, count, s->chunks, 0);
        }
        if (r != NULL && s->chunks != NULL
            && (protocol = SLOT(s->conn, fp.c_protocol)) != NULL
            && SLOT(protocol, fp.p_state) != fp.open_state) {
            Py_SETREF(r, PyObject_CallMethodNoArgs(s->conn, str_closing_started));
        }
        if (r != NULL) {
            if (sent != NULL) *sent += wrote;
            Py_DECREF(r);
        }
        else if (write_failed(s->conn, failed) < 0) {
            if (err_type == NULL) PyErr_Fetch(&err_type, &err, &err_tb);
            else PyErr_Clear();
            status = -1;
        }
        Py_DECREF(s->conn);
        Py_DECREF(s->transport);
        Py_XDECREF(s->chunks);
    }
    if (pending_type != NULL && err_type != NULL) { /* ours wins; the pending one is its context */
        PyErr_NormalizeException(&pending_type, &pending, &pending_tb);
        PyErr_NormalizeException(&err_type, &err, &err_tb);
        if (pending_tb != NULL) PyException_SetTraceback(pending, pending_tb);
        PyException_SetContext(err, pending); /* steals */
        Py_DECREF(pending_type);
        Py_XDECREF(pending_tb);
        pending_type = NULL;
    }
    if (err_type != NULL) PyErr_Restore(err_type, err, err_tb);
    if (pending_type != NULL) PyErr_Restore(pending_type, pending, pending_tb);
    return status;
#else
    return 0;
#endif
}

/* Queue connection `conn`'s write of `frame` (chunks NULL) or of its queued
 * output `chunks` (a new reference the batch takes over) when the
 * connection may write directly (direct_fd(); `open` as there). The holder
 * makes room first (batch_full()). 1: queued; 0: not queued (chunks not
 * taken), the caller writes; -1: direct_fd() raised (chunks not taken). */
static int
batch_write(PyObject *conn, PyObject *transport, PyObject *frame, PyObject *chunks, int open)
{
#ifdef BATCHED_SENDS
    Py_ssize_t total = 0, k;
    int fd;

    if (chunks == NULL) {
        total = PyBytes_GET_SIZE(frame);
    }
    else {
        if (PyList_GET_SIZE(chunks) == 0 || PyList_GET_SIZE(chunks) > IOV_PER_SEND) return 0;
        for (k = 0; k < PyList_GET_SIZE(chunks); k++) {
            if (!PyBytes_CheckExact(PyList_GET_ITEM(chunks, k))) return 0;
            total += PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, k));
        }
    }
    if (total == 0 || total > INT_MAX || ring.fd < 0 /* dropped by batch_submit() */) return 0;
    fd = direct_fd(conn, transport, open);
    if (fd < 0) return fd == -2 ? -1 : 0;
    batch_add(fd, frame, chunks, total, conn, transport);
    return 1;
#else
    return 0;
#endif
}

/* 1 when the batch must be submitted before another write joins it. */
static int
batch_full(void)
{
#ifdef BATCHED_SENDS
    return batch.n == BATCH;
#else
    return 0;
#endif
}

PyDoc_STRVAR(batched_sends_doc,
"batched_sends(enable=None, /) -> (bool, int)\n\n"
"Whether broadcasts and the end of each loop iteration hand the kernel\n"
"their direct writes in batches through io_uring (Linux 5.19+), and how many\n"
"sends went that way in this process. With an argument, turn batching on or\n"
"off first. True only when it is on and this process has a ring (set up\n"
"here if it has none yet).");

static PyObject *
batched_sends(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int ready = 0;

    if (check_nargs("batched_sends", nargs, 0, 1) < 0) return NULL;
    if (nargs == 1 && args[0] != Py_None) {
        int flag = PyObject_IsTrue(args[0]);
        if (flag < 0) return NULL;
        batching_on = flag;
    }
#ifdef BATCHED_SENDS
    ready = batching_on && ((ring.busy && !ring.forked) || ring_ready());
#endif
    return Py_BuildValue("(OK)", ready ? Py_True : Py_False, batched_count);
}

PyDoc_STRVAR(flush_corked_doc,
"flush_corked(connections, flush_one, /) -> None\n\n"
"The loop of Server._flush_corked() over the list `connections`: for a\n"
"connection of the bound classes, what flush_one(connection) does (clear\n"
"_flush_scheduled; if something is corked and the transport is not closing,\n"
"write it), with the direct writes handed to the kernel in batches; any\n"
"other connection goes to flush_one(connection). Every connection is dealt\n"
"with even when one raises; the first exception is raised at the end.");

static PyObject *
flush_corked(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *list, *flush_one, *err_type = NULL, *err = NULL, *err_tb = NULL;
    Py_ssize_t i;
    int held;

    if (check_nargs("flush_corked", nargs, 2, 2) < 0) return NULL;
    list = args[0];
    flush_one = args[1];
    if (!PyList_CheckExact(list)) {
        PyErr_SetString(PyExc_TypeError, "flush_corked() expects a list");
        return NULL;
    }
    held = fp.conn_type != NULL && batch_hold();
    for (i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *conn = Py_NewRef(PyList_GET_ITEM(list, i)), *transport, *corked, *r = NULL, *v;
        int truth, closing;

        if (conn_checked(conn) && (corked = SLOT(conn, fp.c_corked)) != NULL
            && (transport = SLOT(conn, fp.c_transport)) != NULL) {
            /* flush_one(), with the write queued */
            slot_set(conn, fp.c_flush_scheduled, Py_False);
            truth = corked == small_zero ? 0 : PyObject_IsTrue(corked);
            if (truth > 0) {
                v = PyObject_CallMethodNoArgs(transport, str_is_closing);
                closing = v == NULL ? -1 : PyObject_IsTrue(v);
                Py_XDECREF(v);
                truth = closing < 0 ? -1 : !closing;
            }
            if (truth > 0) r = flush_queued(conn, 1, held);
            else if (truth == 0) r = Py_NewRef(Py_None);
        }
        /* any code may run in a subclass's _flush(): the batch goes first */
        else if (!held || batch_submit(NULL, NULL, NULL) == 0) {
            r = PyObject_CallOneArg(flush_one, conn);
        }
        Py_DECREF(conn);
        if (r == NULL) {
            if (err_type == NULL) PyErr_Fetch(&err_type, &err, &err_tb);
            else PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    if (held) {
        if (batch_submit(NULL, NULL, NULL) < 0) {
            if (err_type == NULL) PyErr_Fetch(&err_type, &err, &err_tb);
            else PyErr_Clear();
        }
        batch_release();
    }
    if (err_type != NULL) {
        PyErr_Restore(err_type, err, err_tb);
        return NULL;
    }
    Py_RETURN_NONE;
}


/* The awaitable that send() returns when the message is already queued:
 * completes at once, like a coroutine that returned None. It has the
 * coroutine methods, so asyncio.iscoroutine() accepts it (create_task,
 * gather, wait_for). */
typedef struct {
    PyObject_HEAD
} DoneObject;

static PyObject *
done_self(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
done_next(PyObject *self)
{
    return NULL; /* StopIteration(None), no exception object */
}

static PyObject *
done_send(PyObject *self, PyObject *value)
{
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

static PyObject *
done_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ, *val = NULL, *tb = NULL;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    typ = args[0];
    if (nargs > 1) val = args[1];
    if (nargs > 2) tb = args[2];
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
        if (tb != NULL && tb != Py_None) {
            PyException_SetTraceback(typ, tb);
        }
        return NULL;
    }
    if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val == Py_None ? NULL : val);
        return NULL;
    }
    PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
    return NULL;
}

static PyObject *
done_close(PyObject *self, PyObject *unused)
{
    Py_RETURN_NONE;
}

static PyMethodDef done_methods[] = {
    {"send", (PyCFunction)done_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))done_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)done_close, METH_NOARGS, NULL},
    {"__await__", (PyCFunction)done_self, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods done_as_async = {
    .am_await = done_self,
};

static PyTypeObject DoneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shardws._speedups.Sent",
    .tp_basicsize = sizeof(DoneObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What send() returns once the message is queued: awaiting it returns None.",
    .tp_as_async = &done_as_async,
    .tp_iter = done_self,
    .tp_iternext = done_next,
    .tp_methods = done_methods,
};

static PyObject *sent_singleton;

/* ServerConnection._cork(size): count `size` more bytes queued in the
 * protocol; write them at the end of this loop iteration, or now past
 * _cork_limit. 0, or -1 with an exception. */
static int
conn_cork(PyObject *self, Py_ssize_t size)
{
    Py_ssize_t corked = slot_ssize(self, fp.c_corked), limit = slot_ssize(self, fp.c_cork_limit);

    if (corked < 0 || limit < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_corked and _cork_limit");
        return -1;
    }
    corked += size;
    if (corked >= limit) {
        PyObject *r = conn_flush(self, NULL);
        if (r == NULL) return -1;
        Py_DECREF(r);
        return 0;
    }
    if (slot_set_new(self, fp.c_corked, PyLong_FromSsize_t(corked)) < 0) return -1;
    if (SLOT(self, fp.c_flush_scheduled) != Py_True) {
        PyObject *server = SLOT(self, fp.c_server), *to_flush;
        int first;
        slot_set(self, fp.c_flush_scheduled, Py_True);
        to_flush = PyObject_GetAttr(server, str_to_flush);
        if (to_flush == NULL) return -1;
        first = PyObject_Not(to_flush);
        if (first > 0) {
            PyObject *cb = PyObject_GetAttr(server, str_flush_corked), *r;
            if (cb == NULL) {
                Py_DECREF(to_flush);
                return -1;
            }
            r = PyObject_CallMethodOneArg(SLOT(self, fp.c_loop), str_call_soon, cb);
            Py_DECREF(cb);
            if (r == NULL) {
                Py_DECREF(to_flush);
                return -1;
            }
            Py_DECREF(r);
        }
        if (first < 0 || (PyList_CheckExact(to_flush) ? PyList_Append(to_flush, self) : -1) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_to_flush");
            Py_DECREF(to_flush);
            return -1;
        }
        Py_DECREF(to_flush);
    }
    return 0;
}

/* ServerConnection.send: a str or bytes on an OPEN connection, text not
 * contradicting its type, is framed and corked here. */
static PyObject *
conn_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *message, *text = Py_None, *protocol, *out, *frame, *payload = NULL, *owned = NULL;
    const char *p;
    Py_ssize_t n, nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames), hlen;
    uint8_t opcode, *h;

    if (nargs + nkw < 1 || nargs + nkw > 2 || nargs < 1) goto slow;
    message = args[0];
    if (nargs == 2) text = args[1];
    else if (nkw == 1) {
        if (PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), str_text) != 0) {
            if (PyErr_Occurred()) PyErr_Clear();
            goto slow;
        }
        text = args[1];
    }
    if (!conn_checked(self) || SLOT(self, fp.c_fragmented) != Py_None
        || SLOT(self, fp.c_server) == NULL || SLOT(self, fp.c_loop) == NULL) goto slow;
    if ((protocol = open_protocol(self)) == NULL) goto slow;
    if (SLOT(protocol, fp.p_plain) != Py_True || SLOT(protocol, fp.p_send_fragmented) != Py_False)
        goto slow;
    out = SLOT(protocol, fp.p_out);
    if (out == NULL || !PyList_CheckExact(out)) goto slow;
    if (PyUnicode_CheckExact(message)) {
        if (text != Py_None && text != Py_True) goto slow;
        opcode = 0x81;
        if (PyUnicode_IS_ASCII(message)) {
            p = (const char *)PyUnicode_DATA(message);
            n = PyUnicode_GET_LENGTH(message);
        }
        else {
            owned = PyUnicode_AsUTF8String(message);
            if (owned == NULL) {
                PyErr_Clear(); /* e.g. a lone surrogate: raised by the Python method */
                goto slow;
            }
            p = PyBytes_AS_STRING(owned);
            n = PyBytes_GET_SIZE(owned);
        }
    }
    else if (PyBytes_CheckExact(message)) {
        if (text != Py_None && text != Py_False) goto slow;
        opcode = 0x82;
        p = PyBytes_AS_STRING(message);
        n = PyBytes_GET_SIZE(message);
    }
    else goto slow;

    hlen = n < 126 ? 2 : n < 65536 ? 4 : 10;
    if (n < fp.split_at) {
        frame = PyBytes_FromStringAndSize(NULL, hlen + n);
        if (frame == NULL) goto error;
        memcpy(PyBytes_AS_STRING(frame) + hlen, p, (size_t)n);
    }
    else {
        /* header, then the payload object itself: one writev, no copy */
        frame = PyBytes_FromStringAndSize(NULL, hlen);
        if (frame == NULL) goto error;
        if (owned != NULL) payload = Py_NewRef(owned);
        else if (opcode == 0x82) payload = Py_NewRef(message);
        else payload = PyBytes_FromStringAndSize(p, n);
        if (payload == NULL) {
            Py_DECREF(frame);
            goto error;
        }
    }
    h = (uint8_t *)PyBytes_AS_STRING(frame);
    h[0] = opcode;
    if (hlen == 2) {
        h[1] = (uint8_t)n;
    }
    else if (hlen == 4) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
    }
    else {
        h[1] = 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    if (PyList_Append(out, frame) < 0 || (payload != NULL && PyList_Append(out, payload) < 0)) {
        Py_DECREF(frame);
        Py_XDECREF(payload);
        goto error;
    }
    Py_DECREF(frame);
    Py_XDECREF(payload);
    Py_CLEAR(owned);
    if (slot_add(fp.stats, fp.s_messages_out, 1) < 0) return NULL;

    if (conn_cork(self, n + 2) < 0) return NULL; /* + header: never 0, even when empty */
    if (SLOT(self, fp.c_write_paused) == Py_True) {
        return PyObject_CallMethodNoArgs(self, str_drain);
    }
    return Py_NewRef(sent_singleton);

error:
    Py_XDECREF(owned);
    return NULL;

slow:
    Py_XDECREF(owned);
    return call_python_method(str_send_py, self, args, nargs, kwnames);
}

/* -- receiving, the awaitable side */

/* What recv() and __anext__() return: the C twin of the coroutine
 * ServerConnection._receive(decode=None, iterating). Each step pops a queued
 * message, or waits on a new future in _recv_waiter (after writing what
 * send() corked). Whenever _receive has more to do than that -- another
 * recv() waiting, the connection closed, a failure held back -- it creates
 * that coroutine and delegates every later step to it. */
typedef struct {
    PyObject_HEAD
    PyObject *conn;
    PyObject *waiter;   /* the future this step waits on, else NULL */
    PyObject *delegate; /* the _receive coroutine taking over, else NULL */
    char iterating;
    char finished;
} ReceiveObject;

static PyTypeObject ReceiveType;

/* The Python coroutine it stands in for: conn._receive(None, iterating). */
static PyObject *
receive_coroutine(PyObject *conn, int iterating)
{
    PyObject *args[3] = {conn, Py_None, iterating ? Py_True : Py_False};

    return PyObject_VectorcallMethod(str_receive, args, 3, NULL);
}

static void
receive_forget_waiter(ReceiveObject *r)
{
    if (r->waiter != NULL) {
        if (SLOT(r->conn, fp.c_recv_waiter) == r->waiter) {
            slot_set(r->conn, fp.c_recv_waiter, Py_None);
        }
        Py_CLEAR(r->waiter);
    }
}

static PySendResult
receive_delegate_send(ReceiveObject *r, PyObject *arg, PyObject **result)
{
    PySendResult status = PyIter_Send(r->delegate, arg, result);

    if (status != PYGEN_NEXT) {
        r->finished = 1;
        Py_CLEAR(r->delegate);
    }
    return status;
}

/* One step with nothing thrown in: the body of _receive's loop. */
static PySendResult
receive_step(ReceiveObject *r, PyObject *arg, PyObject **result)
{
    PyObject *conn = r->conn, *messages, *message, *waiter, *loop, *v;
    Py_ssize_t queued;

    if (r->finished) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        *result = NULL;
        return PYGEN_ERROR;
    }
    if (r->delegate != NULL) {
        return receive_delegate_send(r, arg, result);
    }
    if (r->waiter != NULL) {
        /* resumed: the waiter completed (a throw() handles cancellation) */
        receive_forget_waiter(r);
    }
    else if (SLOT(conn, fp.c_recv_waiter) != Py_None) {
        goto delegate; /* ConcurrencyError, raised by _receive */
    }
    messages = SLOT(conn, fp.c_messages);
    if (messages == NULL || !Py_IS_TYPE(messages, fp.deque_type)) goto delegate;
    if (PyObject_Length(messages) > 0) {
        message = PyObject_Vectorcall(fp.deque_popleft, &messages, 1, NULL);
        if (message == NULL) goto error;
        queued = slot_ssize(conn, fp.c_queued_bytes);
        if (queued < 0 || slot_set_new(conn, fp.c_queued_bytes, PyLong_FromSsize_t(
                queued - PyObject_Length(message))) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_queued_bytes");
            Py_DECREF(message);
            goto error;
        }
        if (SLOT(conn, fp.c_queue_full) == Py_True) {
            v = PyObject_CallMethodNoArgs(conn, str_resume_if_drained);
            if (v == NULL) {
                Py_DECREF(message);
                goto error;
            }
            Py_DECREF(v);
        }
        r->finished = 1;
        *result = message;
        return PYGEN_RETURN;
    }
    /* Nothing queued: wait, unless _receive has more to do. */
    if (SLOT(conn, fp.c_closed_waiter) == NULL || SLOT(conn, fp.c_fail_handle) == NULL
        || SLOT(conn, fp.c_transport) == NULL || SLOT(conn, fp.c_loop) == NULL) goto delegate;
    v = future_call(SLOT(conn, fp.c_closed_waiter), 0, NULL);
    if (v == NULL) goto error;
    if (v != Py_False || SLOT(conn, fp.c_fail_handle) != Py_None) {
        Py_DECREF(v);
        goto delegate;
    }
    Py_DECREF(v);
    /* What send() corked: written now, or left to Server._flush_corked()
     * (batch_others()). */
    if (SLOT(conn, fp.c_corked) != NULL && PyObject_IsTrue(SLOT(conn, fp.c_corked)) == 1
        && !batch_others(conn)) {
        int closing;
        v = PyObject_CallMethodNoArgs(SLOT(conn, fp.c_transport), str_is_closing);
        if (v == NULL) goto error;
        closing = PyObject_IsTrue(v);
        Py_DECREF(v);
        if (closing < 0) goto error;
        if (!closing) {
            v = flush_queued(conn, 1, 0);
            if (v == NULL) goto error;
            Py_DECREF(v);
        }
    }
    loop = SLOT(conn, fp.c_loop);
    waiter = PyObject_CallMethodNoArgs(loop, str_create_future);
    if (waiter == NULL) goto error;
    if (PyObject_SetAttr(waiter, str_future_blocking, Py_True) < 0) {
        Py_DECREF(waiter);
        goto error;
    }
    slot_set(conn, fp.c_recv_waiter, waiter);
    r->waiter = waiter;
    *result = Py_NewRef(waiter);
    return PYGEN_NEXT;

delegate:
    r->delegate = receive_coroutine(conn, r->iterating);
    if (r->delegate == NULL) goto error;
    return receive_delegate_send(r, Py_None, result);

error:
    r->finished = 1;
    *result = NULL;
    return PYGEN_ERROR;
}

static PySendResult
receive_am_send(PyObject *self, PyObject *arg, PyObject **result)
{
    return receive_step((ReceiveObject *)self, arg, result);
}

static PyObject *
receive_next(PyObject *self)
{
    PyObject *result;
    PySendResult status = receive_step((ReceiveObject *)self, Py_None, &result);

    if (status == PYGEN_RETURN) {
        if (result == Py_None) {
            Py_DECREF(result);
            return NULL;
        }
        {
            PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
            Py_DECREF(result);
            if (stop != NULL) {
                PyErr_SetObject(PyExc_StopIteration, stop);
                Py_DECREF(stop);
            }
        }
        return NULL;
    }
    return result; /* the future to wait on, or NULL with the error set */
}

static PyObject *
receive_send(PyObject *self, PyObject *value)
{
    ReceiveObject *r = (ReceiveObject *)self;

    if (r->delegate == NULL && r->waiter == NULL && !r->finished && value != Py_None) {
        PyErr_SetString(PyExc_TypeError,
                        "can't send non-None value to a just-started coroutine");
        return NULL;
    }
    return receive_next(self); /* the value a future resumes with is ignored */
}

static PyObject *
receive_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ReceiveObject *r = (ReceiveObject *)self;

    if (r->delegate != NULL) {
        PyObject *meth = PyObject_GetAttrString(r->delegate, "throw"), *res;
        if (meth == NULL) return NULL;
        res = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
        Py_DECREF(meth);
        if (res == NULL) {
            r->finished = 1;
            Py_CLEAR(r->delegate);
        }
        return res;
    }
    /* _receive's `finally: self._recv_waiter = None`, then the exception
     * leaves the coroutine */
    receive_forget_waiter(r);
    r->finished = 1;
    return done_throw(self, args, nargs);
}

static PyObject *
receive_close(PyObject *self, PyObject *unused)
{
    ReceiveObject *r = (ReceiveObject *)self;

    r->finished = 1;
    receive_forget_waiter(r);
    if (r->delegate != NULL) {
        PyObject *res = PyObject_CallMethod(r->delegate, "close", NULL);
        Py_CLEAR(r->delegate);
        return res;
    }
    Py_RETURN_NONE;
}

static int
receive_traverse(PyObject *self, visitproc visit, void *arg)
{
    ReceiveObject *r = (ReceiveObject *)self;
    Py_VISIT(r->conn);
    Py_VISIT(r->waiter);
    Py_VISIT(r->delegate);
    return 0;
}

static int
receive_clear(PyObject *self)
{
    ReceiveObject *r = (ReceiveObject *)self;
    Py_CLEAR(r->waiter);
    Py_CLEAR(r->delegate);
    Py_CLEAR(r->conn);
    return 0;
}

static void
receive_dealloc(PyObject *self)
{
    ReceiveObject *r = (ReceiveObject *)self;

    PyObject_GC_UnTrack(self);
    if (r->conn != NULL) {
        receive_forget_waiter(r); /* a dropped coroutine runs its finally too */
    }
    receive_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef receive_methods[] = {
    {"send", (PyCFunction)receive_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))receive_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)receive_close, METH_NOARGS, NULL},
    {"__await__", (PyCFunction)done_self, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods receive_as_async = {
    .am_await = done_self,
    .am_send = receive_am_send,
};

static PyTypeObject ReceiveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shardws._speedups.Receive",
    .tp_basicsize = sizeof(ReceiveObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What recv() and __anext__() return: awaiting it returns the next message.",
    .tp_as_async = &receive_as_async,
    .tp_iter = done_self,
    .tp_iternext = receive_next,
    .tp_methods = receive_methods,
    .tp_traverse = receive_traverse,
    .tp_clear = receive_clear,
    .tp_dealloc = receive_dealloc,
};

static PyObject *
new_receive(PyObject *self, int iterating)
{
    ReceiveObject *r;

    if (!conn_checked(self)) {
        return receive_coroutine(self, iterating);
    }
    r = PyObject_GC_New(ReceiveObject, &ReceiveType);
    if (r == NULL) return NULL;
    r->conn = Py_NewRef(self);
    r->waiter = NULL;
    r->delegate = NULL;
    r->iterating = (char)iterating;
    r->finished = 0;
    PyObject_GC_Track((PyObject *)r);
    return (PyObject *)r;
}

static PyObject *
conn_anext(PyObject *self, PyObject *unused)
{
    return new_receive(self, 1);
}

static PyObject *
conn_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    if (nargs + nkw == 0 || (nargs + nkw == 1 && args[0] == Py_None
                             && (nkw == 0 || PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0),
                                                               str_decode) == 0))) {
        return new_receive(self, 0);
    }
    if (PyErr_Occurred()) PyErr_Clear();
    return call_python_method(str_recv_py, self, args, nargs, kwnames);
}

/* -- broadcast */

PyDoc_STRVAR(broadcast_plain_doc,
"broadcast_plain(connections, frame, deliver, failed, epoch, /) -> int\n\n"
"The loop of shardws.asyncio.broadcast.broadcast(): for every connection\n"
"that is OPEN, not sending a fragmented message, not paused for writing and\n"
"without compression, write `frame` and mark the connection with `epoch`\n"
"(this loop iteration) -- or, when something of it already waits for the\n"
"end of the iteration (corked bytes, or `epoch` already), queue the frame\n"
"behind it and cork -- and count it; pass every other connection to\n"
"deliver(connection) -> 0 or 1 (the Python loop body), and a connection\n"
"whose write raised to failed(connection, exc). Returns the number of\n"
"connections written to.");

static PyObject *
broadcast_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *it, *conn, *frame, *deliver, *failed, *epoch;
    Py_ssize_t sent = 0;
    int shared_bytes, held, stop = 0;

    if (check_nargs("broadcast_plain", nargs, 5, 5) < 0) return NULL;
    if (fp.conn_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "connection_fast_paths() was not called");
        return NULL;
    }
    frame = args[1];
    deliver = args[2];
    failed = args[3];
    epoch = args[4];
    shared_bytes = PyBytes_CheckExact(frame); /* else deliver() takes every connection */
    it = PyObject_GetIter(args[0]);
    if (it == NULL) return NULL;
    held = shared_bytes && batch_hold();
    while (!stop && (conn = PyIter_Next(it)) != NULL) {
        PyObject *protocol, *transport, *corked, *out, *r;

        if (shared_bytes && conn_checked(conn)
            && (protocol = open_protocol(conn)) != NULL
            && SLOT(conn, fp.c_fragmented) == Py_None
            && SLOT(conn, fp.c_write_paused) == Py_False
            && SLOT(protocol, fp.p_share_key) == Py_None
            && SLOT(protocol, fp.p_send_fragmented) == Py_False
            && (corked = SLOT(conn, fp.c_corked)) != NULL && PyLong_CheckExact(corked)
            && (out = SLOT(protocol, fp.p_out)) != NULL && PyList_CheckExact(out)
            && (transport = SLOT(conn, fp.c_transport)) != NULL) {
            if (corked == small_zero /* the int 0 */ && SLOT(conn, fp.c_broadcast_epoch) != epoch) {
                int queued = held ? batch_write(conn, transport, frame, NULL, 0) : 0;

                slot_set(conn, fp.c_broadcast_epoch, epoch);
                if (queued > 0) { /* counted by batch_submit() */
                    Py_DECREF(conn);
                    if (batch_full() && batch_submit(frame, failed, &sent) < 0) stop = 1;
                    continue;
                }
                r = queued < 0 ? NULL : conn_write(conn, transport, &frame, 1, NULL, 0);
            }
            else if (PyList_Append(out, frame) < 0 || conn_cork(conn, PyBytes_GET_SIZE(frame)) < 0) {
                r = NULL;
            }
            else {
                r = Py_NewRef(Py_None);
            }
            if (r != NULL) {
                sent++;
            }
            else if ((!held || batch_submit(frame, failed, &sent) == 0) /* before Python code runs */
                     && write_failed(conn, failed) == 0) {
                r = Py_NewRef(Py_None);
            }
        }
        else if (held && batch_submit(frame, failed, &sent) < 0) { /* before Python code runs */
            r = NULL;
        }
        else {
            r = PyObject_CallOneArg(deliver, conn);
            if (r != NULL) {
                Py_ssize_t n = PyLong_AsSsize_t(r);
                if (n == -1 && PyErr_Occurred()) {
                    Py_CLEAR(r);
                }
                else {
                    sent += n;
                }
            }
        }
        Py_DECREF(conn);
        if (r == NULL) {
            stop = 1;
        }
        Py_XDECREF(r);
    }
    Py_DECREF(it);
    if (held) {
        int pending = PyErr_Occurred() != NULL;
        int status = batch_submit(frame, failed, &sent);
        batch_release();
        if (pending || status < 0) return NULL;
    }
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(sent);
}

static PyMethodDef conn_data_received_def = {
    "data_received", (PyCFunction)conn_data_received, METH_O,
    "Take whole messages in C; anything else goes to _data_received_py."};
static PyMethodDef conn_send_def = {
    "send", (PyCFunction)(void (*)(void))conn_send, METH_FASTCALL | METH_KEYWORDS,
    "send(message, text=None): queue a str or bytes in C; anything else goes to _send_py."};
static PyMethodDef conn_flush_def = {
    "_flush", (PyCFunction)conn_flush, METH_NOARGS,
    "Write what the protocol queued (the C version of _flush_py)."};
static PyMethodDef conn_recv_def = {
    "recv", (PyCFunction)(void (*)(void))conn_recv, METH_FASTCALL | METH_KEYWORDS,
    "recv(decode=None): the next message (C); any decode goes to _recv_py."};
static PyMethodDef conn_anext_def = {
    "__anext__", (PyCFunction)conn_anext, METH_NOARGS,
    "The next message of async for (C twin of _receive(None, True))."};

PyDoc_STRVAR(connection_fast_paths_doc,
"connection_fast_paths(connection_cls, protocol_cls, parser_cls, options_cls,\n"
"                      stats, open_state, split_at, /) -> dict\n\n"
"Bind the C fast paths to these classes (their __slots__ offsets) and return\n"
"method descriptors of connection_cls: 'data_received', 'send', '_flush',\n"
"'recv' and '__anext__'. Each calls the Python method it stands in for,\n"
"kept under a '_py' name, for every case it does not take itself.");

static PyObject *
connection_fast_paths(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *classes[N_CLASSES], *collections, *result;
    Py_ssize_t split_at;

    if (check_nargs("connection_fast_paths", nargs, 7, 7) < 0) return NULL;
    for (int i = 0; i < OF_STATS; i++) {
        if (!PyType_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "connection_fast_paths() expects 4 classes first");
            return NULL;
        }
        classes[i] = args[i];
    }
    classes[OF_STATS] = (PyObject *)Py_TYPE(args[4]);
    split_at = PyLong_AsSsize_t(args[6]);
    if (split_at == -1 && PyErr_Occurred()) return NULL;
    for (size_t i = 0; i < N_SLOTS; i++) {
        if (slot_offset(classes[slot_table[i].cls], slot_table[i].name, slot_table[i].off) < 0)
            return NULL;
    }
    collections = PyImport_ImportModule("collections");
    if (collections == NULL) return NULL;
    Py_XSETREF(fp.deque_type, (PyTypeObject *)PyObject_GetAttrString(collections, "deque"));
    Py_DECREF(collections);
    if (fp.deque_type == NULL) return NULL;
    Py_XSETREF(fp.deque_append, PyObject_GetAttrString((PyObject *)fp.deque_type, "append"));
    if (fp.deque_append == NULL) return NULL;
    Py_XSETREF(fp.deque_popleft, PyObject_GetAttrString((PyObject *)fp.deque_type, "popleft"));
    if (fp.deque_popleft == NULL) return NULL;
    Py_XSETREF(fp.checked_types, PyDict_New());
    if (fp.checked_types == NULL) return NULL;
    Py_XSETREF(fp.conn_type, (PyTypeObject *)Py_NewRef(classes[OF_CONNECTION]));
    Py_XSETREF(fp.protocol_type, (PyTypeObject *)Py_NewRef(classes[OF_PROTOCOL]));
    Py_XSETREF(fp.parser_type, (PyTypeObject *)Py_NewRef(classes[OF_PARSER]));
    Py_XSETREF(fp.options_type, (PyTypeObject *)Py_NewRef(classes[OF_OPTIONS]));
    Py_XSETREF(fp.stats, Py_NewRef(args[4]));
    Py_XSETREF(fp.open_state, Py_NewRef(args[5]));
    fp.split_at = split_at;

    result = PyDict_New();
    if (result == NULL) return NULL;
    {
        PyMethodDef *methods[] = {
            &conn_data_received_def, &conn_send_def, &conn_flush_def, &conn_recv_def,
            &conn_anext_def,
        };
        for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
            PyObject *d = PyDescr_NewMethod(fp.conn_type, methods[i]);
            if (d == NULL || PyDict_SetItemString(result, methods[i]->ml_name, d) < 0) {
                Py_XDECREF(d);
                Py_DECREF(result);
                return NULL;
            }
            Py_DECREF(d);
        }
    }
    return result;
}

static int
fast_paths_init(PyObject *module)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&str_data_received_py, "_data_received_py"}, {&str_send_py, "_send_py"},
        {&str_flush_py, "_flush_py"}, {&str_queue_overflow, "_queue_overflow"},
        {&str_closing_started, "_closing_started"}, {&str_drain, "_drain"},
        {&str_done, "done"}, {&str_set_result, "set_result"}, {&str_write, "write"},
        {&str_writelines, "writelines"}, {&str_is_closing, "is_closing"},
        {&str_call_soon, "call_soon"}, {&str_to_flush, "_to_flush"},
        {&str_flush_corked, "_flush_corked"}, {&str_text, "text"},
        {&str_recv_py, "_recv_py"}, {&str_decode, "decode"},
        {&str_create_future, "create_future"},
        {&str_future_blocking, "_asyncio_future_blocking"},
        {&str_resume_if_drained, "_resume_if_drained"}, {&str_receive, "_receive"},
        {&str_get_write_buffer_size, "get_write_buffer_size"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL
            && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return -1;
        }
    }
    if (PyType_Ready(&DoneType) < 0 || PyType_Ready(&ReceiveType) < 0) return -1;
    if (small_zero == NULL && (small_zero = PyLong_FromLong(0)) == NULL) return -1;
    if (sent_singleton == NULL) {
        sent_singleton = PyType_GenericAlloc(&DoneType, 0);
        if (sent_singleton == NULL) return -1;
    }
    return 0;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL, apply_mask_doc},
    {"unmask_inplace", (PyCFunction)(void (*)(void))unmask_inplace, METH_FASTCALL,
     unmask_inplace_doc},
    {"parse_header", (PyCFunction)(void (*)(void))parse_header, METH_FASTCALL,
     parse_header_doc},
    {"scan_frames", (PyCFunction)(void (*)(void))scan_frames, METH_FASTCALL, scan_frames_doc},
    {"scan_messages", (PyCFunction)(void (*)(void))scan_messages, METH_FASTCALL,
     scan_messages_doc},
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL, parse_head_doc},
    {"connection_fast_paths", (PyCFunction)(void (*)(void))connection_fast_paths, METH_FASTCALL,
     connection_fast_paths_doc},
    {"broadcast_plain", (PyCFunction)(void (*)(void))broadcast_plain, METH_FASTCALL,
     broadcast_plain_doc},
    {"batched_sends", (PyCFunction)(void (*)(void))batched_sends, METH_FASTCALL,
     batched_sends_doc},
    {"flush_corked", (PyCFunction)(void (*)(void))flush_corked, METH_FASTCALL,
     flush_corked_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
    head_tables_init();
    if (fast_paths_init(module) < 0) {
        return -1;
    }
#if SHARDWS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        mask_large = mask_avx2;
        mask_impl = "avx2";
    }
    else {
        mask_large = mask_sse2;
        mask_impl = "sse2";
    }
#endif
    /* Which masking loop this CPU runs: "avx2", "sse2" or "words64". */
    return PyModule_AddStringConstant(module, "MASK_IMPL", mask_impl);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "shardws._speedups",
    "C versions of shardws' protocol hot paths (see shardws.speedups).",
    0,
    speedups_methods,
    speedups_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
