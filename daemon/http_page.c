/* http_page.c - GET /: the live page (daemon/page/index.html, embedded
 * into the binary at build time by daemon/page/embed.py). */
#include "http_int.h"
#include "http_page_data.h"

void http_page(struct http_srv *h, struct evhttp_request *req)
{
    http_reply(h, req, HP_PAGE, 200, "text/html; charset=utf-8",
               (const char *)http_page_html, (size_t)http_page_html_len);
}
