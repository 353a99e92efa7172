/*
 * tok_bytelevel.c - GPT-2's byte <-> Unicode alphabet.
 *
 * Printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to the code point
 * of the same value; the other 68 bytes (0x00..0x20, 0x7F..0xA0, 0xAD)
 * map, in increasing byte order, to U+0100, U+0101, ... (so ' ' is U+0120
 * 'Ġ' and '\n' is U+010A 'Ċ'). The byte-level vocabulary is written in
 * this alphabet; encoding never materialises it (BPE runs on raw bytes),
 * decoding maps back.
 */
#include "tok_internal.h"

static int printable(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
           (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_bl_byte_to_cp(unsigned b)
{
    if (printable(b))
        return b;
    if (b <= 0x20)
        return 256 + b;
    if (b >= 0x7F && b <= 0xA0)
        return 256 + 33 + (b - 0x7F);
    return 256 + 67; /* 0xAD */
}

int tok_bl_cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return printable(cp) ? (int)cp : -1;
    uint32_t k = cp - 256;
    if (k < 33)
        return (int)k;
    if (k < 67)
        return (int)(0x7F + (k - 33));
    if (k == 67)
        return 0xAD;
    return -1;
}

long tok_bl_unmap(const char *s, size_t len, char *out)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    long n = 0;
    while (p < end) {
        uint32_t cp;
        p += tok_utf8_next(p, &cp);
        int b = tok_bl_cp_to_byte(cp);
        if (b < 0)
            return -1;
        out[n++] = (char)b;
    }
    return n;
}
