"""Unit tests of the keyword logic: `python3 -m unittest` in this folder."""

import unittest

import keywords_core as k


class KeywordsTest(unittest.TestCase):
    def test_ranks_by_frequency_then_first_appearance(self):
        text = "Coffee first, then more coffee. Rain later; rain again, coffee!"
        self.assertEqual(k.keywords(text, top=3), ["coffee", "rain", "first"])

    def test_skips_stopwords_entities_links_and_numbers(self):
        text = "RT @someone: the #election results are in https://t.co/abc 2024 www.example.com"
        self.assertEqual(k.keywords(text), ["results"])

    def test_unicode_words(self):
        self.assertEqual(k.keywords("Café naïve Москва café", top=2), ["café", "naïve"])

    def test_config_is_checked(self):
        self.assertEqual(k.parse_config({"top": 2})[0], 2)
        with self.assertRaisesRegex(ValueError, "`topp`"):
            k.parse_config({"topp": 2})
        with self.assertRaisesRegex(ValueError, "`top`"):
            k.parse_config({"top": 0})


if __name__ == "__main__":
    unittest.main()
