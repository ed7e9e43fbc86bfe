/* traptor.c: the traptor C SDK — posts, outcomes, configuration, and the
 * plugin ABI (traptor:plugin@0.2.0) by hand. See traptor.h. */
#include "traptor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- The canonical-ABI layout of the WIT records -------------------- */
typedef struct {
  uint32_t start, len;
} span;
typedef struct {
  uint32_t first, count;
} range;
typedef struct {
  uint8_t some;
  span s;
} opt_span;
typedef struct {
  uint8_t some;
  double lng, lat;
} opt_point;
typedef struct {
  span raw, id, source, text;
  opt_span author_id, author_handle, lang, created_at;
  range hashtags, mentions, urls, cashtags;
  opt_point coordinates;
  uint8_t is_retweet, is_reply, is_quote;
  range matched_rules;
} post_rec;
typedef struct {
  span id;
  opt_span tag;
  span value, rule_type;
} rule_rec;
typedef struct {
  uint32_t post;
  uint8_t action;
  span text;
} change_rec;
_Static_assert(sizeof(post_rec) == 152, "post record layout");
_Static_assert(sizeof(rule_rec) == 36, "rule record layout");
_Static_assert(sizeof(change_rec) == 16, "change record layout");

typedef struct {
  uint32_t count;
  const char *data;
  const post_rec *posts;
  const span *strings;
  const uint32_t *refs;
  const rule_rec *rules;
} batch;

struct traptor_post {
  const batch *b;
  const post_rec *r;
};

static traptor_fields reads;

static traptor_str str(const batch *b, span s) {
  traptor_str out = {b->data + s.start, s.len};
  return out;
}

static const char *const field_names[] = {"raw", "id", "source", "text", "author", "lang", "created-at", "hashtags",
                                          "mentions", "urls", "cashtags", "coordinates", "kinds", "matched-rules"};

static const post_rec *need(const traptor_post *p, traptor_fields f) {
  if (!(reads & f)) {
    int i = 0;
    while ((1u << i) != f) i++;
    fprintf(stderr, "traptor: the stage read the field `%s`, which it does not declare (add it to the fields init returns)\n",
            field_names[i]);
    abort();
  }
  return p->r;
}

static bool opt(const traptor_post *p, opt_span o, traptor_str *out) {
  if (o.some && out) *out = str(p->b, o.s);
  return o.some != 0;
}

traptor_str traptor_post_raw(const traptor_post *p) { return str(p->b, need(p, TRAPTOR_RAW)->raw); }
traptor_str traptor_post_id(const traptor_post *p) { return str(p->b, need(p, TRAPTOR_ID)->id); }
traptor_str traptor_post_source(const traptor_post *p) { return str(p->b, need(p, TRAPTOR_SOURCE)->source); }
traptor_str traptor_post_text(const traptor_post *p) { return str(p->b, need(p, TRAPTOR_TEXT)->text); }
bool traptor_post_author_id(const traptor_post *p, traptor_str *out) {
  return opt(p, need(p, TRAPTOR_AUTHOR)->author_id, out);
}
bool traptor_post_author_handle(const traptor_post *p, traptor_str *out) {
  return opt(p, need(p, TRAPTOR_AUTHOR)->author_handle, out);
}
bool traptor_post_lang(const traptor_post *p, traptor_str *out) { return opt(p, need(p, TRAPTOR_LANG)->lang, out); }
bool traptor_post_created_at(const traptor_post *p, traptor_str *out) {
  return opt(p, need(p, TRAPTOR_CREATED_AT)->created_at, out);
}
bool traptor_post_coordinates(const traptor_post *p, double *lng, double *lat) {
  const opt_point *c = &need(p, TRAPTOR_COORDINATES)->coordinates;
  if (c->some) {
    if (lng) *lng = c->lng;
    if (lat) *lat = c->lat;
  }
  return c->some != 0;
}
bool traptor_post_is_retweet(const traptor_post *p) { return need(p, TRAPTOR_KINDS)->is_retweet; }
bool traptor_post_is_reply(const traptor_post *p) { return need(p, TRAPTOR_KINDS)->is_reply; }
bool traptor_post_is_quote(const traptor_post *p) { return need(p, TRAPTOR_KINDS)->is_quote; }

static range list_range(const traptor_post *p, traptor_list list) {
  switch (list) {
    case TRAPTOR_LIST_HASHTAGS: return need(p, TRAPTOR_HASHTAGS)->hashtags;
    case TRAPTOR_LIST_MENTIONS: return need(p, TRAPTOR_MENTIONS)->mentions;
    case TRAPTOR_LIST_URLS: return need(p, TRAPTOR_URLS)->urls;
    default: return need(p, TRAPTOR_CASHTAGS)->cashtags;
  }
}
size_t traptor_post_count(const traptor_post *p, traptor_list list) { return list_range(p, list).count; }
traptor_str traptor_post_item(const traptor_post *p, traptor_list list, size_t i) {
  range r = list_range(p, list);
  if (i >= r.count) {
    traptor_str none = {"", 0};
    return none;
  }
  return str(p->b, p->b->strings[r.first + i]);
}
size_t traptor_post_rule_count(const traptor_post *p) { return need(p, TRAPTOR_MATCHED_RULES)->matched_rules.count; }
traptor_rule traptor_post_rule(const traptor_post *p, size_t i) {
  traptor_rule out = {{"", 0}, false, {"", 0}, {"", 0}, {"", 0}};
  range r = need(p, TRAPTOR_MATCHED_RULES)->matched_rules;
  if (i >= r.count) return out;
  const rule_rec *rule = &p->b->rules[p->b->refs[r.first + i]];
  out.id = str(p->b, rule->id);
  out.has_tag = opt(p, rule->tag, &out.tag);
  out.value = str(p->b, rule->value);
  out.rule_type = str(p->b, rule->rule_type);
  return out;
}

/* ---- Outcomes and enrichments --------------------------------------- */
traptor_outcome traptor_keep(void) {
  traptor_outcome o = {TRAPTOR_KEEP, "", 0};
  return o;
}
traptor_outcome traptor_drop(const char *reason) {
  traptor_outcome o = {TRAPTOR_DROP, reason, strlen(reason)};
  return o;
}
traptor_outcome traptor_fail(const char *message) {
  traptor_outcome o = {TRAPTOR_ERROR, message, strlen(message)};
  return o;
}

struct traptor_enrichment {
  char *buf;
  size_t len, cap;
};
static traptor_enrichment builder;

static void put(traptor_enrichment *e, const char *s, size_t n) {
  if (e->len + n > e->cap) {
    size_t cap = e->cap ? e->cap : 256;
    while (cap < e->len + n) cap *= 2;
    char *grown = realloc(e->buf, cap);
    if (!grown) abort();
    e->buf = grown;
    e->cap = cap;
  }
  memcpy(e->buf + e->len, s, n);
  e->len += n;
}

static void put_json_string(traptor_enrichment *e, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  put(e, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      put(e, esc, 2);
    } else if (c == '\n') {
      put(e, "\\n", 2);
    } else if (c == '\r') {
      put(e, "\\r", 2);
    } else if (c == '\t') {
      put(e, "\\t", 2);
    } else if (c < 0x20) {
      char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      put(e, esc, 6);
    } else {
      put(e, (const char *)&s[i], 1);
    }
  }
  put(e, "\"", 1);
}

static void key(traptor_enrichment *e, const char *k) {
  put(e, e->len ? "," : "{", 1);
  put_json_string(e, k, strlen(k));
  put(e, ":", 1);
}

traptor_enrichment *traptor_enrichment_new(void) {
  builder.len = 0;
  return &builder;
}
void traptor_enrich_int(traptor_enrichment *e, const char *k, long long v) {
  char n[24];
  key(e, k);
  put(e, n, (size_t)snprintf(n, sizeof n, "%lld", v));
}
void traptor_enrich_double(traptor_enrichment *e, const char *k, double v) {
  char n[32];
  key(e, k);
  if (v != v || v > 1.7976931348623157e308 || v < -1.7976931348623157e308)
    put(e, "null", 4);
  else {
    /* The shortest text that reads back as v (as Go, Rust and JavaScript print it). */
    int len = 0;
    for (int prec = 1; prec <= 17; prec++) {
      len = snprintf(n, sizeof n, "%.*g", prec, v);
      if (strtod(n, NULL) == v) break;
    }
    put(e, n, (size_t)len);
  }
}
void traptor_enrich_bool(traptor_enrichment *e, const char *k, bool v) {
  key(e, k);
  put(e, v ? "true" : "false", v ? 4 : 5);
}
void traptor_enrich_string(traptor_enrichment *e, const char *k, traptor_str v) {
  key(e, k);
  put_json_string(e, v.ptr, v.len);
}
void traptor_enrich_json(traptor_enrichment *e, const char *k, const char *json) {
  key(e, k);
  put(e, json, strlen(json));
}
traptor_outcome traptor_enrich(traptor_enrichment *e) {
  if (!e->len) put(e, "{", 1);
  put(e, "}", 1);
  traptor_outcome o = {TRAPTOR_ENRICH, e->buf, e->len};
  return o;
}

/* ---- Text ------------------------------------------------------------ */
uint32_t traptor_utf8_next(const char **s, const char *end) {
  const unsigned char *p = (const unsigned char *)*s;
  if (*s >= end) return 0xFFFD;
  uint32_t c = p[0], min;
  size_t n;
  if (c < 0x80) {
    *s += 1;
    return c;
  } else if (c >= 0xC2 && c <= 0xDF) {
    n = 2, min = 0x80, c &= 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, min = 0x800, c &= 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, min = 0x10000, c &= 0x07;
  } else {
    *s += 1;
    return 0xFFFD;
  }
  if ((size_t)(end - *s) < n) {
    *s += 1;
    return 0xFFFD;
  }
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) {
      *s += 1;
      return 0xFFFD;
    }
    c = (c << 6) | (p[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) { /* overlong, too large, surrogate */
    *s += 1;
    return 0xFFFD;
  }
  *s += n;
  return c;
}

/* True when [q, p) decoded to U+FFFD without being one: an invalid byte. */
static bool invalid_at(const char *q, const char *p, uint32_t c) {
  const unsigned char *u = (const unsigned char *)q;
  return c == 0xFFFD && !(p - q == 3 && u[0] == 0xEF && u[1] == 0xBF && u[2] == 0xBD);
}

/* s as valid UTF-8 (each invalid byte becomes U+FFFD), in *buf when it must
 * change: a WIT string must be UTF-8 or the host traps the call. */
static traptor_str valid_utf8(const char *s, size_t n, char **buf) {
  traptor_str same = {s, n};
  const char *p = s, *end = s + n;
  while (p < end) {
    const char *q = p;
    if (invalid_at(q, p, traptor_utf8_next(&p, end))) break;
  }
  if (p >= end) return same;
  char *out = realloc(*buf, n * 3 + 1);
  if (!out) abort();
  *buf = out;
  size_t len = 0;
  for (p = s; p < end;) {
    const char *q = p;
    uint32_t c = traptor_utf8_next(&p, end);
    if (invalid_at(q, p, c)) {
      memcpy(out + len, "\xEF\xBF\xBD", 3), len += 3;
    } else {
      memcpy(out + len, q, (size_t)(p - q)), len += (size_t)(p - q);
    }
  }
  out[len] = 0;
  traptor_str fixed = {out, len};
  return fixed;
}

bool traptor_is_whitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- Configuration: a small JSON reader ----------------------------- */
typedef struct {
  const char *p, *end;
} cursor;

static void ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* A string's text into buf (NUL-terminated, cut at cap-1); false when malformed. */
static bool json_string(cursor *c, char *buf, size_t cap) {
  size_t n = 0;
  if (c->p >= c->end || *c->p != '"') return false;
  c->p++;
  while (c->p < c->end && *c->p != '"') {
    char ch = *c->p++;
    if (ch == '\\') {
      if (c->p >= c->end) return false;
      ch = *c->p++;
      if (ch == 'u') { /* an ASCII code point as itself, any other as '?' (keys that matter are ASCII) */
        if (c->end - c->p < 4) return false;
        char hex[5] = {c->p[0], c->p[1], c->p[2], c->p[3], 0};
        char *rest;
        long cp = strtol(hex, &rest, 16);
        if (*rest) return false;
        c->p += 4;
        ch = cp > 0 && cp < 0x80 ? (char)cp : '?';
      } else if (ch == 'n') {
        ch = '\n';
      } else if (ch == 't') {
        ch = '\t';
      } else if (ch == 'r') {
        ch = '\r';
      } else if (ch == 'b') {
        ch = '\b';
      } else if (ch == 'f') {
        ch = '\f';
      } else if (ch != '"' && ch != '\\' && ch != '/') {
        return false;
      }
    }
    if (n + 1 < cap) buf[n++] = ch;
  }
  if (c->p >= c->end) return false;
  c->p++;
  if (cap) buf[n] = 0;
  return true;
}

static bool json_skip(cursor *c, int depth) {
  char tmp[1];
  ws(c);
  if (c->p >= c->end || depth > 64) return false;
  char ch = *c->p;
  if (ch == '"') return json_string(c, tmp, 0);
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == close) return c->p++, true;
    for (;;) {
      if (ch == '{') {
        ws(c);
        if (!json_string(c, tmp, 0)) return false;
        ws(c);
        if (c->p >= c->end || *c->p++ != ':') return false;
      }
      if (!json_skip(c, depth + 1)) return false;
      ws(c);
      if (c->p >= c->end) return false;
      if (*c->p == ',') {
        c->p++;
        continue;
      }
      return *c->p++ == close;
    }
  }
  const char *start = c->p;
  while (c->p < c->end && (strchr("+-.eE", *c->p) || (*c->p >= '0' && *c->p <= '9') || (*c->p >= 'a' && *c->p <= 'z'))) c->p++;
  return c->p > start;
}

typedef bool (*member_fn)(const char *key, cursor *value, void *ctx);

/* Calls f for each member of the object; a message when malformed. */
static const char *members(traptor_str config, member_fn f, void *ctx) {
  cursor c = {config.ptr, config.ptr + config.len};
  char k[128];
  ws(&c);
  if (c.p >= c.end) return NULL;
  if (*c.p++ != '{') return "configuration must be a table";
  ws(&c);
  if (c.p < c.end && *c.p == '}') return NULL;
  for (;;) {
    ws(&c);
    if (!json_string(&c, k, sizeof k)) return "configuration is not valid JSON";
    ws(&c);
    if (c.p >= c.end || *c.p++ != ':') return "configuration is not valid JSON";
    ws(&c);
    cursor value = c;
    if (!json_skip(&c, 0)) return "configuration is not valid JSON";
    value.end = c.p;
    if (!f(k, &value, ctx)) return NULL;
    ws(&c);
    if (c.p < c.end && *c.p == ',') {
      c.p++;
      continue;
    }
    if (c.p < c.end && *c.p == '}') return NULL;
    return "configuration is not valid JSON";
  }
}

static char message[256];

typedef struct {
  const char *const *known;
  const char *bad;
} keys_ctx;

static bool check_key(const char *k, cursor *v, void *ctx) {
  keys_ctx *kc = ctx;
  (void)v;
  for (const char *const *n = kc->known; *n; n++)
    if (!strcmp(*n, k)) return true;
  size_t used = (size_t)snprintf(message, sizeof message, "unknown config key `%s` (known: ", k);
  for (const char *const *n = kc->known; *n && used < sizeof message; n++)
    used += (size_t)snprintf(message + used, sizeof message - used, "%s%s", n == kc->known ? "" : ", ", *n);
  if (used < sizeof message) snprintf(message + used, sizeof message - used, ")");
  kc->bad = message;
  return false;
}

const char *traptor_config_check_keys(traptor_str config, const char *const *known) {
  keys_ctx kc = {known, NULL};
  const char *err = members(config, check_key, &kc);
  return err ? err : kc.bad;
}

typedef struct {
  const char *key;
  long long *out;
  const char *err;
} int_ctx;

static bool read_int(const char *k, cursor *v, void *ctx) {
  int_ctx *ic = ctx;
  if (strcmp(k, ic->key)) return true;
  long long n = 0;
  bool neg = false, digits = false;
  const char *p = v->p;
  if (p < v->end && *p == '-') neg = true, p++;
  for (; p < v->end && *p >= '0' && *p <= '9'; p++) {
    digits = true;
    if (n > (9223372036854775807LL - 9) / 10) break;
    n = n * 10 + (*p - '0');
  }
  while (p < v->end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++;
  if (!digits || p != v->end) {
    snprintf(message, sizeof message, "config key `%s` must be a whole number", k);
    ic->err = message;
    return false;
  }
  *ic->out = neg ? -n : n;
  return false;
}

const char *traptor_config_int(traptor_str config, const char *key, long long *out) {
  int_ctx ic = {key, out, NULL};
  const char *err = members(config, read_int, &ic);
  return err ? err : ic.err;
}

/* ---- The plugin ABI (wasm only) -------------------------------------- */
#ifdef __wasm__
#define EXPORT(name) __attribute__((export_name(name)))
#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

IMPORT("traptor:plugin/host@0.2.0", "log")
void host_log(int32_t level, const char *msg, size_t msg_len, const void *fields, size_t fields_len);
IMPORT("traptor:plugin/host@0.2.0", "counter")
void host_counter(const char *name, size_t name_len, uint64_t delta);

static char *log_buf, *counter_buf;

void traptor_log(int level, const char *msg) {
  traptor_str m = valid_utf8(msg, strlen(msg), &log_buf);
  host_log(level < 0 ? 0 : level > 4 ? 4 : level, m.ptr, m.len, NULL, 0);
}
void traptor_counter(const char *name, uint64_t delta) {
  traptor_str n = valid_utf8(name, strlen(name), &counter_buf);
  host_counter(n.ptr, n.len, delta);
}

static _Alignas(16) char empty_block[16]; /* aligned for every WIT type */

EXPORT("cabi_realloc")
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
  (void)old_size;
  (void)align; /* malloc's alignment (16) is at least every WIT type's */
  if (!new_size) return empty_block;
  void *p = realloc(old == (void *)empty_block ? NULL : old, new_size);
  if (!p) abort();
  return p;
}

static traptor_description described;
static uint32_t describe_ret[10];

EXPORT("traptor:plugin/stage@0.2.0#describe")
uint32_t *traptor_abi_describe(void) {
  static char *bufs[4];
  described = traptor_stage_describe();
  const char *s[4] = {described.name, described.version, described.summary, described.config_schema};
  const int at[4] = {0, 2, 5, 7}; /* name, version, (kind), summary, config-schema */
  for (int i = 0; i < 4; i++) {
    traptor_str v = valid_utf8(s[i] ? s[i] : "", s[i] ? strlen(s[i]) : 0, &bufs[i]);
    describe_ret[at[i]] = (uint32_t)(uintptr_t)v.ptr, describe_ret[at[i] + 1] = v.len;
  }
  describe_ret[4] = described.kind;
  describe_ret[9] = described.reads;
  return describe_ret;
}

static uint32_t init_ret[3];

EXPORT("traptor:plugin/stage@0.2.0#init")
uint32_t *traptor_abi_init(char *config, size_t len) {
  traptor_str text = {len ? config : "{}", len ? len : 2};
  traptor_fields f = 0;
  const char *err = traptor_stage_init(text, &f);
  if (len) free(config);
  if (err) {
    static char *err_buf;
    traptor_str e = valid_utf8(err, strlen(err), &err_buf);
    init_ret[0] = 1, init_ret[1] = (uint32_t)(uintptr_t)e.ptr, init_ret[2] = e.len;
  } else {
    init_ret[0] = 0, init_ret[1] = f;
    reads = f;
  }
  return init_ret;
}

static char *res_data;
static size_t res_len, res_cap;
static change_rec *res_changes;
static size_t changes_len, changes_cap;
static uint32_t process_ret[4];

static void grow(void **buf, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *p = realloc(*buf, c * size);
  if (!p) abort();
  *buf = p, *cap = c;
}

EXPORT("traptor:plugin/stage@0.2.0#process")
uint32_t *traptor_abi_process(uint32_t count, char *data, size_t data_len, post_rec *posts, size_t posts_len,
                              span *strings, size_t strings_len, uint32_t *refs, size_t refs_len, rule_rec *rules,
                              size_t rules_len) {
  batch b = {count, data, posts, strings, refs, rules};
  res_len = 0, changes_len = 0;
  for (uint32_t i = 0; i < count; i++) {
    traptor_post p = {&b, i < posts_len ? &posts[i] : NULL};
    traptor_outcome o = traptor_stage_process(&p);
    if (o.action == TRAPTOR_KEEP) continue;
    grow((void **)&res_data, &res_cap, res_len + o.len, 1);
    memcpy(res_data + res_len, o.text, o.len);
    grow((void **)&res_changes, &changes_cap, changes_len + 1, sizeof(change_rec));
    change_rec c = {i, (uint8_t)(o.action - 1), {(uint32_t)res_len, (uint32_t)o.len}};
    res_changes[changes_len++] = c;
    res_len += o.len;
  }
  /* The callee owns what the host lowered; an empty list was never allocated. */
  if (data_len) free(data);
  if (posts_len) free(posts);
  if (strings_len) free(strings);
  if (refs_len) free(refs);
  if (rules_len) free(rules);
  process_ret[0] = (uint32_t)(uintptr_t)res_data, process_ret[1] = res_len;
  process_ret[2] = (uint32_t)(uintptr_t)res_changes, process_ret[3] = changes_len;
  return process_ret;
}

/* ---- Unit tests (native) -------------------------------------------- */
#else
int traptor_test_failures;
static char *logged, *log_buf;
void traptor_log(int level, const char *msg) {
  (void)level;
  traptor_str m = valid_utf8(msg, strlen(msg), &log_buf); /* what the host would be sent */
  free(logged);
  logged = malloc(m.len + 1);
  if (logged) memcpy(logged, m.ptr, m.len), logged[m.len] = 0;
}
const char *traptor_test_last_log(void) { return logged ? logged : ""; }
void traptor_counter(const char *name, uint64_t delta) { (void)name, (void)delta; }

typedef struct {
  char *data;
  size_t len, cap;
  span *strings;
  size_t n_strings;
} test_buf;

static span test_put(test_buf *t, const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (t->len + n > t->cap) {
    t->cap = (t->len + n) * 2 + 64;
    t->data = realloc(t->data, t->cap);
    if (!t->data) abort();
  }
  if (n) memcpy(t->data + t->len, s, n);
  span sp = {(uint32_t)t->len, (uint32_t)n};
  t->len += n;
  return sp;
}

static opt_span test_opt(test_buf *t, const char *s) {
  opt_span o = {0, {0, 0}};
  if (s) o.some = 1, o.s = test_put(t, s);
  return o;
}

static range test_list(test_buf *t, const char *const *items) {
  range r = {(uint32_t)t->n_strings, 0};
  for (; items && *items; items++, r.count++) {
    t->strings = realloc(t->strings, (t->n_strings + 1) * sizeof(span));
    if (!t->strings) abort();
    t->strings[t->n_strings++] = test_put(t, *items);
  }
  return r;
}

const char *traptor_test_run(const char *config, const traptor_test_post *posts, size_t n, traptor_outcome *out) {
  traptor_str c = {config && *config ? config : "{}", config && *config ? strlen(config) : 2};
  traptor_fields f = 0;
  const char *err = traptor_stage_init(c, &f);
  if (err) return err;
  reads = f;
  test_buf t = {0};
  post_rec *recs = calloc(n ? n : 1, sizeof(post_rec));
  if (!recs) abort();
  for (size_t i = 0; i < n; i++) {
    const traptor_test_post *p = &posts[i];
    post_rec *r = &recs[i];
    r->raw = test_put(&t, p->raw), r->id = test_put(&t, p->id), r->source = test_put(&t, p->source);
    r->text = test_put(&t, p->text);
    r->author_id = test_opt(&t, p->author_id), r->author_handle = test_opt(&t, p->author_handle);
    r->lang = test_opt(&t, p->lang), r->created_at = test_opt(&t, p->created_at);
    r->hashtags = test_list(&t, p->hashtags), r->mentions = test_list(&t, p->mentions);
    r->urls = test_list(&t, p->urls), r->cashtags = test_list(&t, p->cashtags);
    r->coordinates.some = p->has_coordinates, r->coordinates.lng = p->lng, r->coordinates.lat = p->lat;
    r->is_retweet = p->is_retweet, r->is_reply = p->is_reply, r->is_quote = p->is_quote;
  }
  batch b = {(uint32_t)n, t.data, recs, t.strings, NULL, NULL};
  for (size_t i = 0; i < n; i++) {
    traptor_post p = {&b, &recs[i]};
    traptor_outcome o = traptor_stage_process(&p);
    char *copy = malloc(o.len + 1);
    if (!copy) abort();
    memcpy(copy, o.text, o.len);
    copy[o.len] = 0;
    out[i] = o, out[i].text = copy;
  }
  free(t.data), free(t.strings), free(recs);
  return NULL;
}
#endif
