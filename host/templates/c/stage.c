/* `{{name}}`: a traptor stage ({{kind}}) in C, made by `traptor-host plugin new`.
 *
 * {{summary}}
 * The SDK (traptor.h, traptor.c) hides the plugin ABI; C++ files (.cc, .cpp)
 * may sit beside this one: `traptor-host plugin build` compiles them all. */
#include <stdio.h>

#include "traptor.h"

static long long min_words = 3;

traptor_description traptor_stage_describe(void) {
  traptor_description d = {
      .name = "{{name}}",
      .version = "0.1.0",
      .kind = TRAPTOR_{{kind_upper}},
      .summary = "{{summary}}",
      .config_schema = "{\"type\":\"object\",\"additionalProperties\":false,"
                       "\"properties\":{\"min_words\":{\"type\":\"integer\",\"minimum\":0,\"default\":3}}}",
      /* The host sends only the fields a stage reads; reading another one
       * aborts the stage, naming it. */
      .reads = TRAPTOR_TEXT,
  };
  return d;
}

/* The stage's `config` table (JSON): unknown or mistyped keys are refused. */
const char *traptor_stage_init(traptor_str config, traptor_fields *reads) {
  static const char *const known[] = {"min_words", NULL};
  long long n = 3;
  const char *err = traptor_config_check_keys(config, known);
  if (!err) err = traptor_config_int(config, "min_words", &n);
  if (err) return err;
  if (n < 0) return "config key `min_words` must be a whole number >= 0";
  min_words = n;
  *reads = TRAPTOR_TEXT;
  return NULL;
}

/* Words are runs of characters that are not Unicode White_Space. */
long long count_words(traptor_str text) {
  const char *s = text.ptr, *end = text.ptr + text.len;
  long long words = 0;
  int in_word = 0;
  while (s < end) {
    int space = traptor_is_whitespace(traptor_utf8_next(&s, end));
    if (!space && !in_word) words++;
    in_word = !space;
  }
  return words;
}

traptor_outcome traptor_stage_process(const traptor_post *post) {
  long long words = count_words(traptor_post_text(post));
{{process_c}}
}
