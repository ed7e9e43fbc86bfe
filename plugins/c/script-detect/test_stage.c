/* Unit tests of script-detect, natively:
 *   cc -o target/test_stage stage.c traptor.c test_stage.c && target/test_stage */
#include <stdio.h>
#include <string.h>

#include "traptor.h"

static int failures;
#define EXPECT(i, want)                                                                          \
  do {                                                                                           \
    if (strcmp(out[i].text, want)) {                                                             \
      fprintf(stderr, "%s:%d: post %d: got %s, want %s\n", __FILE__, __LINE__, i, out[i].text, want); \
      failures++;                                                                                \
    }                                                                                            \
  } while (0)

int main(void) {
  traptor_test_post posts[] = {
      {.id = "1", .text = "The quick brown fox"},
      {.id = "2", .text = "東京タワーに行きました @tokyo_tower #東京 https://example.com/abc"},
      {.id = "3", .text = "Привет, мир! 123"},
      {.id = "4", .text = "مرحبا بالعالم"},
      {.id = "5", .text = "ok 👍 12"},
      {.id = "6", .text = "안녕하세요 hello"},
  };
  traptor_outcome out[6];
  const char *err = traptor_test_run("", posts, 6, out);
  if (err) return fprintf(stderr, "init: %s\n", err), 1;
  EXPECT(0, "{\"script\":\"Latin\",\"percent\":100}");
  EXPECT(1, "{\"script\":\"Hiragana\",\"percent\":45}"); /* 5 kana of 11 letters */
  EXPECT(2, "{\"script\":\"Cyrillic\",\"percent\":100}");
  EXPECT(3, "{\"script\":\"Arabic\",\"percent\":100}");
  if (out[4].action != TRAPTOR_KEEP) fprintf(stderr, "post 5: too few letters is kept\n"), failures++;
  EXPECT(5, "{\"script\":\"Latin\",\"percent\":50}");
  err = traptor_test_run("{\"min_letter\": 2}", posts, 0, out);
  if (!err || !strstr(err, "min_letter")) fprintf(stderr, "a typo is refused: %s\n", err ? err : "(none)"), failures++;
  if (failures) return 1;
  printf("ok: 7 checks\n");
  return 0;
}
