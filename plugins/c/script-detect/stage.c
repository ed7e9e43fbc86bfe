/* script-detect: a traptor stage in C — the writing system of a post.
 *
 * It reads only the text and adds {"script": "Han", "percent": 82}: the
 * Unicode script most of the post's letters belong to, and that script's
 * share of them. Mentions, hashtags and links are left out (they are Latin
 * whatever the post's language), as are digits, punctuation, symbols and
 * emoji. A post with fewer than `min_letters` letters (default 3) is kept
 * as it is. */
#include <stdio.h>
#include <string.h>

#include "traptor.h"

static long long min_letters = 3;

traptor_description traptor_stage_describe(void) {
  traptor_description d = {
      .name = "script-detect",
      .version = "0.1.0",
      .kind = TRAPTOR_ENRICHER,
      .summary = "Adds the Unicode script most of a post's letters are written in, and its share",
      .config_schema = "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"min_letters\":"
                       "{\"type\":\"integer\",\"minimum\":1,\"default\":3}}}",
      .reads = TRAPTOR_TEXT,
  };
  return d;
}

const char *traptor_stage_init(traptor_str config, traptor_fields *reads) {
  static const char *const known[] = {"min_letters", NULL};
  long long n = 3;
  const char *err = traptor_config_check_keys(config, known);
  if (!err) err = traptor_config_int(config, "min_letters", &n);
  if (err) return err;
  if (n < 1) return "config key `min_letters` must be a whole number >= 1";
  min_letters = n;
  *reads = TRAPTOR_TEXT;
  return NULL;
}

/* Scripts by code point block (letters only; the blocks' digits and marks
 * are few enough to count with them). */
typedef struct {
  uint32_t lo, hi;
  int script;
} block;

enum { LATIN, GREEK, CYRILLIC, ARMENIAN, HEBREW, ARABIC, DEVANAGARI, BENGALI, TAMIL, THAI, GEORGIAN, HANGUL,
       HIRAGANA, KATAKANA, HAN, ETHIOPIC, SCRIPTS };
static const char *const names[SCRIPTS] = {"Latin",   "Greek",   "Cyrillic", "Armenian", "Hebrew",   "Arabic",
                                           "Devanagari", "Bengali", "Tamil",  "Thai",     "Georgian", "Hangul",
                                           "Hiragana", "Katakana", "Han",    "Ethiopic"};
static const block blocks[] = {
    {0x41, 0x5A, LATIN},        {0x61, 0x7A, LATIN},        {0xC0, 0xD6, LATIN},        {0xD8, 0xF6, LATIN},
    {0xF8, 0x24F, LATIN},       {0x1E00, 0x1EFF, LATIN},    {0x370, 0x3FF, GREEK},      {0x1F00, 0x1FFF, GREEK},
    {0x400, 0x52F, CYRILLIC},   {0x531, 0x58F, ARMENIAN},   {0x5D0, 0x5FF, HEBREW},     {0x620, 0x64A, ARABIC},
    {0x66E, 0x6FF, ARABIC},     {0x750, 0x77F, ARABIC},     {0xFB50, 0xFDFF, ARABIC},   {0xFE70, 0xFEFF, ARABIC},
    {0x900, 0x97F, DEVANAGARI}, {0x980, 0x9FF, BENGALI},    {0xB80, 0xBFF, TAMIL},      {0xE00, 0xE7F, THAI},
    {0x10A0, 0x10FF, GEORGIAN}, {0x1100, 0x11FF, HANGUL},   {0x3130, 0x318F, HANGUL},   {0xAC00, 0xD7AF, HANGUL},
    {0x3041, 0x309F, HIRAGANA}, {0x30A0, 0x30FF, KATAKANA}, {0x31F0, 0x31FF, KATAKANA}, {0x3400, 0x4DBF, HAN},
    {0x4E00, 0x9FFF, HAN},      {0xF900, 0xFAFF, HAN},      {0x20000, 0x3134F, HAN},    {0x1200, 0x139F, ETHIOPIC},
};

static int script_of(uint32_t c) {
  for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
    if (c >= blocks[i].lo && c <= blocks[i].hi) return blocks[i].script;
  return -1;
}

/* True at the start of a word that is a mention, hashtag, cashtag or link. */
static int skipped_word(const char *s, const char *end) {
  if (*s == '@' || *s == '#' || *s == '$') return 1;
  return (end - s >= 7 && !memcmp(s, "http://", 7)) || (end - s >= 8 && !memcmp(s, "https://", 8));
}

traptor_outcome traptor_stage_process(const traptor_post *post) {
  traptor_str text = traptor_post_text(post);
  const char *s = text.ptr, *end = text.ptr + text.len;
  long long counts[SCRIPTS] = {0}, letters = 0;
  int at_word_start = 1, skipping = 0;
  while (s < end) {
    if (at_word_start) skipping = skipped_word(s, end);
    uint32_t c = traptor_utf8_next(&s, end);
    at_word_start = traptor_is_whitespace(c);
    int script = skipping || at_word_start ? -1 : script_of(c);
    if (script >= 0) counts[script]++, letters++;
  }
  if (letters < min_letters) return traptor_keep();
  int best = 0;
  for (int i = 1; i < SCRIPTS; i++)
    if (counts[i] > counts[best]) best = i;
  traptor_enrichment *e = traptor_enrichment_new();
  traptor_str name = {names[best], strlen(names[best])};
  traptor_enrich_string(e, "script", name);
  traptor_enrich_int(e, "percent", (counts[best] * 100 + letters / 2) / letters);
  return traptor_enrich(e);
}
