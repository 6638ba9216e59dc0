#ifndef FANFIC_CCURL_SHIM_H
#define FANFIC_CCURL_SHIM_H

#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are C-variadic; Swift calls these
// typed wrappers instead, one per argument kind.
static inline CURLcode fanfic_curl_setopt_long(CURL *handle, CURLoption option, long value) {
  return curl_easy_setopt(handle, option, value);
}

static inline CURLcode fanfic_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
  return curl_easy_setopt(handle, option, value);
}

static inline CURLcode fanfic_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
  return curl_easy_setopt(handle, option, value);
}

typedef size_t (*fanfic_curl_write_callback)(char *data, size_t size, size_t count, void *context);

static inline CURLcode fanfic_curl_setopt_write_function(CURL *handle, fanfic_curl_write_callback callback) {
  return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
}

static inline CURLcode fanfic_curl_setopt_header_function(CURL *handle, fanfic_curl_write_callback callback) {
  return curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, callback);
}

static const CURLversion fanfic_curlversion_now = CURLVERSION_NOW;

static inline CURLcode fanfic_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
  return curl_easy_getinfo(handle, info, value);
}

#endif
