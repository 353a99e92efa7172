/*
 * prompts.c - the prompts file of `mtpc bench`: one prompt per line, either
 * plain text (with \n, \t, \\ escapes) or a JSON object with a "prompt"
 * string (JSONL, as prompt datasets come); other members are skipped.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "mtpc.h"

/* Unescapes \n \t \\ in place. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '\\' && r[1]) {
            r++;
            *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static char *put_utf8(char *w, uint32_t c)
{
    if (c < 0x80) {
        *w++ = (char)c;
    } else if (c < 0x800) {
        *w++ = (char)(0xc0 | (c >> 6));
        *w++ = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        *w++ = (char)(0xe0 | (c >> 12));
        *w++ = (char)(0x80 | ((c >> 6) & 0x3f));
        *w++ = (char)(0x80 | (c & 0x3f));
    } else {
        *w++ = (char)(0xf0 | (c >> 18));
        *w++ = (char)(0x80 | ((c >> 12) & 0x3f));
        *w++ = (char)(0x80 | ((c >> 6) & 0x3f));
        *w++ = (char)(0x80 | (c & 0x3f));
    }
    return w;
}

/* Parses the JSON string at p (at its '"'); decodes it into out when out
 * is not NULL (it never grows: an escape is longer than what it makes).
 * Returns the position after it, or NULL. */
static const char *json_string(const char *p, char *out)
{
    if (*p++ != '"')
        return NULL;
    char *w = out;
    while (*p && *p != '"') {
        char c = *p++;
        if (c != '\\') {
            if (w)
                *w++ = c;
            continue;
        }
        c = *p++;
        uint32_t u;
        switch (c) {
        case 'n': u = '\n'; break;
        case 't': u = '\t'; break;
        case 'r': u = '\r'; break;
        case 'b': u = '\b'; break;
        case 'f': u = '\f'; break;
        case '"': case '\\': case '/': u = (unsigned char)c; break;
        case 'u': {
            int h = hex4(p);
            if (h < 0)
                return NULL;
            p += 4;
            u = (uint32_t)h;
            if (u >= 0xd800 && u < 0xdc00 && p[0] == '\\' && p[1] == 'u') {
                int lo = hex4(p + 2);
                if (lo >= 0xdc00 && lo < 0xe000) {
                    u = 0x10000 + ((u - 0xd800) << 10) + (uint32_t)(lo - 0xdc00);
                    p += 6;
                }
            }
            break;
        }
        default:
            return NULL;
        }
        if (w)
            w = put_utf8(w, u);
    }
    if (*p != '"')
        return NULL;
    if (w)
        *w = 0;
    return p + 1;
}

/* Skips one JSON value; returns the position after it, or NULL. */
static const char *skip_value(const char *p)
{
    p = skip_ws(p);
    if (*p == '"')
        return json_string(p, NULL);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                if (!(p = json_string(p, NULL)))
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']')
        p++; /* number, true, false, null */
    return p;
}

/* The "prompt" member of a JSON object line, decoded in place; NULL when
 * the line has none or is not an object. */
static char *json_prompt(char *line)
{
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return NULL;
    for (;;) {
        p = skip_ws(p);
        if (*p != '"')
            return NULL;
        const char *key = p + 1;
        if (!(p = json_string(p, NULL)))
            return NULL;
        bool is_prompt = p - key - 1 == 6 && !memcmp(key, "prompt", 6);
        p = skip_ws(p);
        if (*p++ != ':')
            return NULL;
        p = skip_ws(p);
        if (is_prompt && *p == '"') {
            char *out = (char *)p; /* decodes over itself */
            return json_string(p, out) ? out : NULL;
        }
        if (!(p = skip_value(p)))
            return NULL;
        p = skip_ws(p);
        if (*p++ != ',')
            return NULL;
    }
}

int load_prompts(const char *path, char **buf, char ***prompts)
{
    *prompts = NULL;
    if (!(*buf = read_file(path)))
        return -1;
    int n = 0, cap = 64, lineno = 0;
    *prompts = malloc((size_t)cap * sizeof **prompts);
    char *save = NULL;
    for (char *line = strtok_r(*buf, "\n", &save); line && *prompts;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line[strcspn(line, "\r")] = 0;
        if (!*line)
            continue;
        char *prompt = line;
        if (*skip_ws(line) == '{') {
            if (!(prompt = json_prompt(line))) {
                fprintf(stderr, "mtpc bench: %s:%d: a JSON line needs a "
                        "\"prompt\" string\n", path, lineno);
                return -1;
            }
        } else {
            unescape(line);
        }
        if (n == cap) {
            char **np = realloc(*prompts, (size_t)(cap *= 2) * sizeof *np);
            if (!np)
                break;
            *prompts = np;
        }
        (*prompts)[n++] = prompt;
    }
    if (!*prompts) {
        fprintf(stderr, "mtpc: out of memory\n");
        return -1;
    }
    if (!n)
        fprintf(stderr, "mtpc bench: %s: no prompts (one per line)\n", path);
    return n;
}
