/* modelfleet_authn: the local gateway's API-key check, compiled into Envoy as a dynamic module (native_auth.py).
 *
 * Per request, on model routes that take API keys (route metadata `modelfleet.authn`: scope, methods):
 *   x-api-key `mf_<12 hex>_<secret>` -> the key id in the table -> SHA-1 of the whole key equals the stored hash
 *   -> not revoked -> not expired -> the key grants the route's scope (or infer:*)
 *   -> tenant and key-id headers set, x-api-key removed; Envoy continues.
 * Any refusal answers 401/403 with the same JSON as the service's ({"error", "code"}), puts the reason in the
 * dynamic metadata the audit line reads, and names the tenant and key id once the key's secret is proven.
 *
 * The table comes from the filter's config (written by native_auth.key_table, reloaded by Envoy from a watched
 * file on every `keys create|revoke`): ids, tenants, scopes, expiry, state and hashes, never a key. A config is
 * immutable once parsed; each update is a new one, and Envoy keeps an old one alive while a request uses it.
 *
 * Why C: the check it replaces (a Lua filter handing the key to basic_auth) cost about 10 us of Envoy CPU per
 * request, this one about 4, half of which any dynamic-module filter costs (bench/gateway.py probe, ADR 0006). */

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envoy_abi.h"

/* The key format, header names, metadata namespace and table header are modelfleet/gateway/plan.py's and
 * native_auth.py's: native_auth.module_path passes them as -D flags (one definition, in Python). */
#if !defined(MF_KEY_PREFIX) || !defined(MF_KEY_ID_HEX) || !defined(MF_SECRET_MIN) || !defined(MF_API_KEY) || \
    !defined(MF_TENANT) || !defined(MF_KEY_ID) || !defined(MF_NS) || !defined(MF_TABLE_MAGIC) || !defined(MF_MODULE_NAME)
#error "build with modelfleet.gateway.native_auth.module_path(), which defines the MF_* constants"
#endif
#define TABLE_MAGIC MF_TABLE_MAGIC
#define KEY_PREFIX MF_KEY_PREFIX
#define KEY_ID_HEX MF_KEY_ID_HEX
#define SECRET_MIN MF_SECRET_MIN
_Static_assert(KEY_ID_HEX >= 1 && KEY_ID_HEX <= 16, "a key id is at most 64 bits of hex (parse_key_id)");

typedef envoy_dynamic_module_type_module_buffer buf;
#define LIT(s) ((buf){(s), sizeof(s) - 1})
#define REQUEST envoy_dynamic_module_type_http_header_type_RequestHeader

static const buf API_KEY = LIT(MF_API_KEY);
static const buf TENANT = LIT(MF_TENANT);
static const buf KEY_ID = LIT(MF_KEY_ID);
static const buf NS = LIT(MF_NS);

typedef struct {
  uint64_t id;
  char id_hex[KEY_ID_HEX + 1];
  unsigned char sha1[SHA_DIGEST_LENGTH];
  char* tenant;
  int64_t expires; /* unix seconds; 0: never */
  int revoked;
  size_t n_scopes;
  char** scopes;
} key_record;

typedef struct {
  key_record* keys; /* sorted by id */
  size_t n_keys;
} key_table;

/* ---- the table ------------------------------------------------------------------------------------------------ */

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int parse_key_id(const char* s, size_t n, uint64_t* out) {
  if (n != KEY_ID_HEX) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    int h = hex_value(s[i]);
    if (h < 0) return 0;
    v = (v << 4) | (uint64_t)h;
  }
  *out = v;
  return 1;
}

/* ASCII only (isalnum would follow the process's locale). */
static int alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int plain(const char* s) { /* tenants and scopes: [A-Za-z0-9:._*-]+ (native_auth checks the same) */
  if (!*s) return 0;
  for (; *s; s++)
    if (!alnum(*s) && !strchr(":._*-", *s)) return 0;
  return 1;
}

/* 1 to 18 ASCII digits (strtoll would take blanks, a sign, and clamp what overflows). */
static int parse_seconds(const char* s, int64_t* out) {
  size_t n = strlen(s);
  if (n < 1 || n > 18) return 0;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 1;
}

static void free_table(key_table* t) {
  if (!t) return;
  for (size_t i = 0; i < t->n_keys; i++) {
    free(t->keys[i].tenant);
    for (size_t j = 0; j < t->keys[i].n_scopes; j++) free(t->keys[i].scopes[j]);
    free(t->keys[i].scopes);
  }
  free(t->keys);
  free(t);
}

static int by_id(const void* a, const void* b) {
  uint64_t x = ((const key_record*)a)->id, y = ((const key_record*)b)->id;
  return x < y ? -1 : x > y;
}

/* Cuts `s` at each `sep` into at most `max` parts; -1 for an empty part or too many (strtok would skip both). */
static int split(char* s, char sep, char** parts, int max) {
  int n = 0;
  for (;;) {
    char* end = strchr(s, sep);
    if (n == max || (end ? end == s : !*s)) return -1;
    parts[n++] = s;
    if (!end) return n;
    *end = '\0';
    s = end + 1;
  }
}

/* One line: `<key id> <sha1 hex> <tenant> <expires> <revoked 0|1> <scope>[,<scope>...]`. */
static int parse_line(char* line, key_record* r) {
  char* fields[6];
  if (split(line, ' ', fields, 6) != 6 || !parse_key_id(fields[0], strlen(fields[0]), &r->id) ||
      strlen(fields[1]) != 2 * SHA_DIGEST_LENGTH || !plain(fields[2]) ||
      (strcmp(fields[4], "0") && strcmp(fields[4], "1")))
    return 0;
  memcpy(r->id_hex, fields[0], KEY_ID_HEX + 1);
  for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
    int hi = hex_value(fields[1][2 * i]), lo = hex_value(fields[1][2 * i + 1]);
    if (hi < 0 || lo < 0) return 0;
    r->sha1[i] = (unsigned char)(hi << 4 | lo);
  }
  if (!parse_seconds(fields[3], &r->expires)) return 0;
  r->revoked = fields[4][0] == '1';
  r->tenant = strdup(fields[2]);
  int max = 1; /* as many scopes as the line has: keys.create sets no limit */
  for (const char* c = fields[5]; *c; c++) max += *c == ',';
  r->scopes = calloc(max, sizeof(char*));
  char** scopes = calloc(max, sizeof(char*));
  int n = scopes ? split(fields[5], ',', scopes, max) : -1;
  int ok = r->tenant && r->scopes && n >= 1;
  for (int i = 0; ok && i < n; i++) {
    ok = plain(scopes[i]) && (r->scopes[i] = strdup(scopes[i]));
    r->n_scopes += ok;
  }
  free(scopes);
  return ok;
}


static key_table* parse_table(const char* text, size_t length) {
  char* copy = malloc(length + 1);
  key_table* t = calloc(1, sizeof(key_table));
  size_t lines = 1;
  if (!copy || !t || (!text && length)) goto fail;
  if (length) memcpy(copy, text, length);
  copy[length] = '\0';
  if (strlen(copy) != length) goto fail; /* a NUL inside */
  for (size_t i = 0; i < length; i++) lines += copy[i] == '\n';
  t->keys = calloc(lines, sizeof(key_record));
  if (!t->keys) goto fail;
  /* Every line ends with a newline: the header, then comments and keys. */
  if (!length || copy[length - 1] != '\n') goto fail;
  copy[length - 1] = '\0';
  char** rows = calloc(lines, sizeof(char*));
  int n = rows ? split(copy, '\n', rows, (int)lines) : -1;
  int ok = n >= 1 && !strcmp(rows[0], TABLE_MAGIC);
  for (int i = 1; ok && i < n; i++)
    if (rows[i][0] != '#') ok = parse_line(rows[i], &t->keys[t->n_keys++]);
  free(rows);
  if (!ok) goto fail;
  qsort(t->keys, t->n_keys, sizeof(key_record), by_id);
  for (size_t i = 1; i < t->n_keys; i++)
    if (t->keys[i].id == t->keys[i - 1].id) goto fail;
  free(copy);
  return t;
fail:
  free(copy);
  free_table(t);
  return NULL;
}

static const key_record* find(const key_table* t, uint64_t id) {
  key_record probe = {.id = id};
  return bsearch(&probe, t->keys, t->n_keys, sizeof(key_record), by_id);
}

static int grants(const key_record* r, const char* scope, size_t scope_len) {
  for (size_t i = 0; i < r->n_scopes; i++) {
    const char* s = r->scopes[i];
    if (!strcmp(s, "infer:*") || (strlen(s) == scope_len && !memcmp(s, scope, scope_len))) return 1;
  }
  return 0;
}

/* ---- the request -------------------------------------------------------------------------------------------- */

/* SHA-1 from one implementation fetched at load and one digest context per Envoy worker thread, reused. OpenSSL 3's
 * one-shot SHA1() looks the algorithm up in its provider store (locks, a hash table) and allocates a context on every
 * call: about 1 us of Envoy's CPU per request here (perf, ADR 0006). A worker thread lives as long as Envoy, so its
 * context is never freed. */
static EVP_MD* sha1_md;

static int sha1(const char* data, size_t n, unsigned char digest[SHA_DIGEST_LENGTH]) {
  static _Thread_local EVP_MD_CTX* context;
  if (!context && !(context = EVP_MD_CTX_new())) return 0;
  return EVP_DigestInit_ex2(context, sha1_md, NULL) && EVP_DigestUpdate(context, data, n) &&
         EVP_DigestFinal_ex(context, digest, NULL);
}

/* Whether the comma-separated `list` names `word` (whole words: "jwt" is not "jwt-x"). */
static int names(envoy_dynamic_module_type_envoy_buffer list, const char* word) {
  size_t n = strlen(word), start = 0;
  for (size_t i = 0; i <= list.length; i++) {
    if (i == list.length || list.ptr[i] == ',') {
      if (i - start == n && !memcmp(list.ptr + start, word, n)) return 1;
      start = i + 1;
    }
  }
  return 0;
}

/* The key's parts, as the Lua pattern `^mf_([0-9a-f]+)_([%w_%-]+)$` had them, with a 12-digit id and a secret
 * of at least 40 characters. */
static int well_formed(const char* key, size_t n, uint64_t* id) {
  size_t p = sizeof(KEY_PREFIX) - 1;
  if (n < p + KEY_ID_HEX + 1 + SECRET_MIN || memcmp(key, KEY_PREFIX, p) || key[p + KEY_ID_HEX] != '_' ||
      !parse_key_id(key + p, KEY_ID_HEX, id))
    return 0;
  for (size_t i = p + KEY_ID_HEX + 1; i < n; i++)
    if (!alnum(key[i]) && key[i] != '_' && key[i] != '-') return 0;
  return 1;
}

static int deny(envoy_dynamic_module_type_http_filter_envoy_ptr envoy, uint32_t status, const char* reason,
                const char* message, const char* scope, size_t scope_len, const key_record* who) {
  if (who) {
    envoy_dynamic_module_callback_http_set_header(envoy, REQUEST, TENANT, (buf){who->tenant, strlen(who->tenant)});
    envoy_dynamic_module_callback_http_set_header(envoy, REQUEST, KEY_ID, (buf){who->id_hex, KEY_ID_HEX});
  }
  envoy_dynamic_module_callback_http_set_dynamic_metadata_string(envoy, NS, LIT("reason"),
                                                                  (buf){reason, strlen(reason)});
  /* Messages and reasons are this file's constants; a scope is a plain identifier (no quote, no backslash). */
  char body[512];
  int n = snprintf(body, sizeof body, "{\"error\": \"%s%.*s\", \"code\": \"%s\"}", message, (int)scope_len,
                   scope ? scope : "", reason);
  if (n < 0 || (size_t)n >= sizeof body) n = snprintf(body, sizeof body, "{\"code\": \"%s\"}", reason);
  if (n < 0 || (size_t)n >= sizeof body) n = 0;
  envoy_dynamic_module_type_module_http_header headers[] = {{"content-type", 12, "application/json", 16}};
  envoy_dynamic_module_callback_http_send_response(envoy, status, headers, 1, (buf){body, (size_t)n},
                                                   LIT(MF_MODULE_NAME));
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_StopIteration;
}

envoy_dynamic_module_type_on_http_filter_request_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr envoy, envoy_dynamic_module_type_http_filter_module_ptr filter,
    bool end_of_stream) {
  (void)end_of_stream;
  const key_table* table = filter;
  envoy_dynamic_module_type_envoy_buffer scope = {0}, methods = {0}, principal = {0}, key = {0};
  int has_scope = envoy_dynamic_module_callback_http_get_metadata_string(
                      envoy, envoy_dynamic_module_type_metadata_source_Route, NS, LIT("scope"), &scope) &&
                  scope.ptr && scope.length;
  int has_methods = envoy_dynamic_module_callback_http_get_metadata_string(
      envoy, envoy_dynamic_module_type_metadata_source_Route, NS, LIT("methods"), &methods);
  if (!has_scope && !has_methods)
    return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue; /* open or unrouted */
  if (!has_scope) /* a model route without a readable scope: our config is wrong; refuse rather than guess */
    return deny(envoy, 500, "no_scope", "this model's route names no scope (gateway configuration)", NULL, 0, NULL);
  /* Every scoped route passes here, so nothing reaches a model unless this filter lets it: a token the token check
   * (Lua, before this filter) verified, or a key. */
  int jwt = names(methods, "jwt"), by_key = names(methods, "api-key");
  if (jwt && envoy_dynamic_module_callback_http_get_metadata_string(
                 envoy, envoy_dynamic_module_type_metadata_source_Dynamic, NS, LIT("principal"), &principal) &&
      principal.length)
    return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue; /* a verified token */
  if (!by_key) return deny(envoy, 401, "missing_credentials", "this model needs a bearer token", NULL, 0, NULL);
  if (!envoy_dynamic_module_callback_http_get_header(envoy, REQUEST, API_KEY, &key, 0, NULL) || !key.ptr)
    return deny(envoy, 401, "missing_credentials",
                jwt ? "this model needs an x-api-key header or a bearer token" : "this model needs an x-api-key header",
                NULL, 0, NULL);
  /* Hash before the header goes: removing it may free the value's memory. */
  uint64_t id;
  int formed = well_formed(key.ptr, key.length, &id);
  unsigned char digest[SHA_DIGEST_LENGTH];
  if (formed && !sha1(key.ptr, key.length, digest))
    return deny(envoy, 500, "digest_failed", "the gateway could not check the key", NULL, 0, NULL);
  envoy_dynamic_module_callback_http_set_header(envoy, REQUEST, API_KEY, (buf){NULL, 0}); /* never to Triton */
  if (!formed) return deny(envoy, 401, "malformed_key", "the API key is malformed", NULL, 0, NULL);
  const key_record* r = find(table, id);
  /* An unknown id and a wrong secret answer alike: a key id alone (it is in audit lines) proves nothing. */
  if (!r || CRYPTO_memcmp(digest, r->sha1, SHA_DIGEST_LENGTH))
    return deny(envoy, 401, "unknown_key", "the API key is not valid", NULL, 0, NULL);
  if (r->revoked) return deny(envoy, 401, "revoked_key", "the API key has been revoked", NULL, 0, r);
  if (r->expires && r->expires <= (int64_t)time(NULL))
    return deny(envoy, 401, "expired_key", "the API key has expired", NULL, 0, r);
  if (!grants(r, scope.ptr, scope.length))
    return deny(envoy, 403, "scope_denied", "the API key does not grant ", scope.ptr, scope.length, r);
  envoy_dynamic_module_callback_http_set_header(envoy, REQUEST, TENANT, (buf){r->tenant, strlen(r->tenant)});
  envoy_dynamic_module_callback_http_set_header(envoy, REQUEST, KEY_ID, (buf){r->id_hex, KEY_ID_HEX});
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue;
}

/* ---- the module's life cycle ---------------------------------------------------------------------------------- */

envoy_dynamic_module_type_abi_version_module_ptr envoy_dynamic_module_on_program_init(void) {
  /* NULL: Envoy refuses to load the module (and says so) rather than run a check that cannot hash. */
  if (!(sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL))) return NULL;
  return ENVOY_DYNAMIC_MODULES_ABI_VERSION;
}

/* NULL refuses the config: Envoy keeps the table it has and counts the update as rejected. */
envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy, envoy_dynamic_module_type_envoy_buffer name,
    envoy_dynamic_module_type_envoy_buffer config) {
  (void)config_envoy;
  if (name.length != sizeof(MF_MODULE_NAME) - 1 || memcmp(name.ptr, MF_MODULE_NAME, name.length)) return NULL;
  return parse_table(config.ptr, config.length);
}

void envoy_dynamic_module_on_http_filter_config_destroy(envoy_dynamic_module_type_http_filter_config_module_ptr c) {
  free_table((key_table*)c);
}

/* A request needs nothing of its own: the filter is its config (Envoy holds the config while the filter lives). */
envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr config, envoy_dynamic_module_type_http_filter_envoy_ptr e) {
  (void)e;
  return config;
}

void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr f) { (void)f; }

/* The hooks Envoy resolves in every HTTP filter module; this one does nothing in them. */
#define UNUSED_FILTER_HOOK(name, ...)                                                                                \
  envoy_dynamic_module_type_on_http_filter_status envoy_dynamic_module_on_http_filter_##name(__VA_ARGS__) {          \
    return MODELFLEET_CONTINUE;                                                                                      \
  }
#define ENVOY_PTR envoy_dynamic_module_type_http_filter_envoy_ptr
#define MODULE_PTR envoy_dynamic_module_type_http_filter_module_ptr
UNUSED_FILTER_HOOK(request_body, ENVOY_PTR e, MODULE_PTR f, bool end)
UNUSED_FILTER_HOOK(request_trailers, ENVOY_PTR e, MODULE_PTR f)
UNUSED_FILTER_HOOK(response_headers, ENVOY_PTR e, MODULE_PTR f, bool end)
UNUSED_FILTER_HOOK(response_body, ENVOY_PTR e, MODULE_PTR f, bool end)
UNUSED_FILTER_HOOK(response_trailers, ENVOY_PTR e, MODULE_PTR f)
void envoy_dynamic_module_on_http_filter_stream_complete(ENVOY_PTR e, MODULE_PTR f) {}
void envoy_dynamic_module_on_http_filter_http_callout_done(ENVOY_PTR e, MODULE_PTR f, uint64_t id,
                                                           envoy_dynamic_module_type_http_callout_result r,
                                                           envoy_dynamic_module_type_envoy_http_header* h, size_t nh,
                                                           envoy_dynamic_module_type_envoy_buffer* b, size_t nb) {}
void envoy_dynamic_module_on_http_filter_http_stream_headers(ENVOY_PTR e, MODULE_PTR f, uint64_t id,
                                                             envoy_dynamic_module_type_envoy_http_header* h, size_t n,
                                                             bool end) {}
void envoy_dynamic_module_on_http_filter_http_stream_data(ENVOY_PTR e, MODULE_PTR f, uint64_t id,
                                                          const envoy_dynamic_module_type_envoy_buffer* d, size_t n,
                                                          bool end) {}
void envoy_dynamic_module_on_http_filter_http_stream_trailers(ENVOY_PTR e, MODULE_PTR f, uint64_t id,
                                                              envoy_dynamic_module_type_envoy_http_header* t,
                                                              size_t n) {}
void envoy_dynamic_module_on_http_filter_http_stream_complete(ENVOY_PTR e, MODULE_PTR f, uint64_t id) {}
void envoy_dynamic_module_on_http_filter_http_stream_reset(ENVOY_PTR e, MODULE_PTR f, uint64_t id,
                                                           envoy_dynamic_module_type_http_stream_reset_reason r) {}
void envoy_dynamic_module_on_http_filter_scheduled(ENVOY_PTR e, MODULE_PTR f, uint64_t id) {}
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(ENVOY_PTR e, MODULE_PTR f) {}
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(ENVOY_PTR e, MODULE_PTR f) {}
