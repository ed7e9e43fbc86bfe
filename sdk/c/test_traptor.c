/* The C SDK's own tests, natively (scripts/test.sh):
 *   cc -std=c11 -Wall -Werror -o /tmp/test_traptor traptor.c test_traptor.c && /tmp/test_traptor */
#include <stdio.h>
#include <string.h>

#include "traptor.h"

/* A stage that echoes what the tests need. */
static long long n = -1;
traptor_description traptor_stage_describe(void) {
  traptor_description d = {"t", "0", TRAPTOR_ENRICHER, "", "{}", TRAPTOR_TEXT};
  return d;
}
const char *traptor_stage_init(traptor_str config, traptor_fields *reads) {
  static const char *const known[] = {"min_words", NULL};
  const char *err = traptor_config_check_keys(config, known);
  if (!err) err = traptor_config_int(config, "min_words", &n);
  *reads = TRAPTOR_TEXT;
  return err;
}
traptor_outcome traptor_stage_process(const traptor_post *post) {
  traptor_enrichment *e = traptor_enrichment_new();
  traptor_enrich_double(e, "tenth", 0.1);
  traptor_enrich_double(e, "third", 1.0 / 3);
  traptor_enrich_double(e, "big", 1e21);
  traptor_enrich_string(e, "text", traptor_post_text(post));
  return traptor_enrich(e);
}

static uint32_t first(const char *s) {
  const char *p = s;
  return traptor_utf8_next(&p, s + strlen(s));
}

int main(void) {
  traptor_test_post posts[] = {{.text = "a\"b\\\n\x01"}};
  traptor_outcome out[1];
  /* Escapes in a key: \u006d is 'm'. */
  TRAPTOR_CHECK(traptor_test_run("{\"\\u006din_words\": 7}", posts, 1, out) == NULL && n == 7);
  TRAPTOR_CHECK(!strcmp(out[0].text, "{\"tenth\":0.1,\"third\":0.3333333333333333,\"big\":1e+21,\"text\":\"a\\\"b\\\\\\n\\u0001\"}"));
  const char *err = traptor_test_run("{\"min_words\": 1.5}", posts, 0, out);
  TRAPTOR_CHECK(err && strstr(err, "whole number"));
  err = traptor_test_run("{\"m\\x\": 1}", posts, 0, out);
  TRAPTOR_CHECK(err && strstr(err, "not valid JSON"));
  err = traptor_test_run("[1]", posts, 0, out);
  TRAPTOR_CHECK(err && strstr(err, "table"));
  /* Strict UTF-8: overlong, surrogate, past U+10FFFF, truncated. */
  TRAPTOR_CHECK(first("\xC0\xAF") == 0xFFFD && first("\xED\xA0\x80") == 0xFFFD && first("\xF4\x90\x80\x80") == 0xFFFD);
  TRAPTOR_CHECK(first("\xE6\x9D\xB1") == 0x6771 && first("\xF0\x9F\x98\x80") == 0x1F600 && first("\xE6\x9D") == 0xFFFD);
  TRAPTOR_CHECK(traptor_is_whitespace(0x85) && traptor_is_whitespace(0x3000) && !traptor_is_whitespace(0x200B) &&
        !traptor_is_whitespace(0xFEFF) && !traptor_is_whitespace(0x1C));
  /* What reaches the host is valid UTF-8, whatever the stage logs. */
  traptor_log(2, "cut \xE6\x9D here \xEF\xBF\xBD kept");
  TRAPTOR_CHECK(!strcmp(traptor_test_last_log(), "cut \xEF\xBF\xBD\xEF\xBF\xBD here \xEF\xBF\xBD kept")); /* one per bad byte */
  if (traptor_test_failures) return 1;
  printf("ok: sdk/c\n");
  return 0;
}
