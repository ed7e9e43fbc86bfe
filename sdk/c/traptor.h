/* traptor.h: the SDK of traptor stages written in C (or C++).
 *
 * A stage is three functions the author writes — traptor_stage_describe,
 * traptor_stage_init, traptor_stage_process — over the post's pre-extracted
 * fields; traptor.c hides the plugin ABI (WIT world traptor:plugin@0.2.0,
 * canonical ABI). `traptor-host plugin new NAME --lang c` writes this header
 * and traptor.c into the project (do not edit them there: a newer
 * traptor-host writes newer ones); they are in traptor's repository under
 * sdk/c. `traptor-host plugin build` compiles the project to a component.
 *
 * Strings (traptor_str) are views of the batch's buffer, UTF-8 and not
 * NUL-terminated, valid during traptor_stage_process.
 */
#ifndef TRAPTOR_H
#define TRAPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The fields a stage reads; the host fills in only these, and reading
 * another one aborts the stage with a message naming it. */
typedef uint16_t traptor_fields;
#define TRAPTOR_RAW (1u << 0)
#define TRAPTOR_ID (1u << 1)
#define TRAPTOR_SOURCE (1u << 2)
#define TRAPTOR_TEXT (1u << 3)
#define TRAPTOR_AUTHOR (1u << 4) /* author id and handle */
#define TRAPTOR_LANG (1u << 5)
#define TRAPTOR_CREATED_AT (1u << 6)
#define TRAPTOR_HASHTAGS (1u << 7)
#define TRAPTOR_MENTIONS (1u << 8)
#define TRAPTOR_URLS (1u << 9)
#define TRAPTOR_CASHTAGS (1u << 10)
#define TRAPTOR_COORDINATES (1u << 11)
#define TRAPTOR_KINDS (1u << 12) /* is_retweet, is_reply, is_quote */
#define TRAPTOR_MATCHED_RULES (1u << 13)

/* A UTF-8 string: ptr[0 .. len), not NUL-terminated. */
typedef struct {
  const char *ptr;
  size_t len;
} traptor_str;

typedef enum { TRAPTOR_ENRICHER = 0, TRAPTOR_FILTER = 1 } traptor_kind;

/* What a stage says about itself (`traptor-host plugin inspect`). */
typedef struct {
  const char *name;
  const char *version;
  traptor_kind kind;
  const char *summary;
  const char *config_schema; /* JSON Schema of the configuration */
  traptor_fields reads;      /* every field the stage may read */
} traptor_description;

/* One post of a batch. */
typedef struct traptor_post traptor_post;

traptor_str traptor_post_raw(const traptor_post *p); /* the original JSON */
traptor_str traptor_post_id(const traptor_post *p);
traptor_str traptor_post_source(const traptor_post *p); /* twitter-v1, x-v2, bluesky, mastodon */
traptor_str traptor_post_text(const traptor_post *p);   /* HTML escapes undone */
/* Optional fields: false when the post has none. */
bool traptor_post_author_id(const traptor_post *p, traptor_str *out);
bool traptor_post_author_handle(const traptor_post *p, traptor_str *out);
bool traptor_post_lang(const traptor_post *p, traptor_str *out);
bool traptor_post_created_at(const traptor_post *p, traptor_str *out); /* RFC 3339, UTC */
bool traptor_post_coordinates(const traptor_post *p, double *lng, double *lat);
bool traptor_post_is_retweet(const traptor_post *p);
bool traptor_post_is_reply(const traptor_post *p);
bool traptor_post_is_quote(const traptor_post *p);

/* The entity lists: hashtags without '#', mentions without '@', expanded
 * URLs, cashtags without '$'. */
typedef enum { TRAPTOR_LIST_HASHTAGS, TRAPTOR_LIST_MENTIONS, TRAPTOR_LIST_URLS, TRAPTOR_LIST_CASHTAGS } traptor_list;
size_t traptor_post_count(const traptor_post *p, traptor_list list);
traptor_str traptor_post_item(const traptor_post *p, traptor_list list, size_t i);

/* The rules the post matched, in rule order. */
typedef struct {
  traptor_str id;
  bool has_tag;
  traptor_str tag;
  traptor_str value;
  traptor_str rule_type; /* track, follow or locations */
} traptor_rule;
size_t traptor_post_rule_count(const traptor_post *p);
traptor_rule traptor_post_rule(const traptor_post *p, size_t i);

/* What a stage answers for one post. */
typedef enum { TRAPTOR_KEEP = 0, TRAPTOR_ENRICH = 1, TRAPTOR_DROP = 2, TRAPTOR_ERROR = 3 } traptor_action;
typedef struct {
  traptor_action action;
  const char *text; /* enrich: a JSON object; drop: the reason; error: the message */
  size_t len;
} traptor_outcome;

traptor_outcome traptor_keep(void);
/* The text is copied when traptor_stage_process returns: it must live until then. */
traptor_outcome traptor_drop(const char *reason);
traptor_outcome traptor_fail(const char *message);

/* An enrichment: a JSON object built field by field, in order, compact.
 * traptor_enrichment_new() resets and returns the SDK's one builder. */
typedef struct traptor_enrichment traptor_enrichment;
traptor_enrichment *traptor_enrichment_new(void);
void traptor_enrich_int(traptor_enrichment *e, const char *key, long long v);
void traptor_enrich_double(traptor_enrichment *e, const char *key, double v);
void traptor_enrich_bool(traptor_enrichment *e, const char *key, bool v);
void traptor_enrich_string(traptor_enrichment *e, const char *key, traptor_str v);
void traptor_enrich_json(traptor_enrichment *e, const char *key, const char *json); /* already JSON */
traptor_outcome traptor_enrich(traptor_enrichment *e);

/* Log to the host, attributed to the stage (levels: 0 trace … 4 error). */
void traptor_log(int level, const char *message);
/* Add delta to the stage's counter `name` (plugin_counter{stage,name}). */
void traptor_counter(const char *name, uint64_t delta);

/* Configuration: the stage's `config` table as JSON text ("{}" when empty).
 * Each returns NULL when all is well, else a message naming the key. */
const char *traptor_config_check_keys(traptor_str config, const char *const *known); /* NULL-terminated */
const char *traptor_config_int(traptor_str config, const char *key, long long *out); /* left alone when absent */

/* Text helpers: the next code point of [*s, end) (U+FFFD for a bad byte:
 * overlong forms, surrogates and bytes past U+10FFFF included),
 * and the Unicode White_Space property (what every traptor SDK splits words on). */
uint32_t traptor_utf8_next(const char **s, const char *end);
bool traptor_is_whitespace(uint32_t c);

/* ---- What the author writes ---------------------------------------- */
traptor_description traptor_stage_describe(void);
/* Configure; return NULL and set *reads to the fields this configuration
 * reads, or return a message saying what is wrong. `config` is valid during
 * this call only: copy what you keep. */
const char *traptor_stage_init(traptor_str config, traptor_fields *reads);
traptor_outcome traptor_stage_process(const traptor_post *post);

/* ---- Unit tests (native builds only) -------------------------------- */
#ifndef __wasm__
#include <stdio.h>
/* A check for unit tests: prints the condition that failed and counts it;
 * main returns traptor_test_failures != 0. */
extern int traptor_test_failures;
#define TRAPTOR_CHECK(cond)                                                   \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);      \
      traptor_test_failures++;                                                \
    }                                                                         \
  } while (0)

typedef struct {
  const char *raw, *id, *source, *text;
  const char *author_id, *author_handle, *lang, *created_at; /* NULL: none */
  const char *const *hashtags;                               /* NULL-terminated, or NULL */
  const char *const *mentions, *const *urls, *const *cashtags;
  bool has_coordinates;
  double lng, lat;
  bool is_retweet, is_reply, is_quote;
} traptor_test_post;
/* Configure the stage with config (JSON) and process the posts as one batch,
 * as the host does (only the fields init returned are readable). Returns
 * init's error or NULL; out[i] gets each outcome (texts copied, malloc). */
const char *traptor_test_run(const char *config, const traptor_test_post *posts, size_t n, traptor_outcome *out);
/* The last message traptor_log sent, as the host would receive it. */
const char *traptor_test_last_log(void);
#endif

#ifdef __cplusplus
}
#endif
#endif
