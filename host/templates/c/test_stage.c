/* Unit tests of `{{name}}`, built natively (see README.md). */
#include <stdio.h>
#include <string.h>

#include "traptor.h"

int main(void) {
  traptor_test_post posts[] = {{.id = "1", .text = "one two three four"}, {.id = "2", .text = "hi"}};
  traptor_outcome out[2];
  TRAPTOR_CHECK(traptor_test_run("{\"min_words\": 3}", posts, 2, out) == NULL);
{{test_c}}
  const char *err = traptor_test_run("{\"min_word\": 3}", posts, 0, out);
  TRAPTOR_CHECK(err && strstr(err, "min_word"));
  if (traptor_test_failures) return 1;
  printf("ok: 2 tests\n");
  return 0;
}
