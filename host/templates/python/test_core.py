"""`python3 -m unittest` in this folder."""

import unittest

import {{module}}_core as core


class CoreTest(unittest.TestCase):
    def test_counts_words(self):
        self.assertEqual(core.count_words("one two  three"), 3)
        # Unicode White_Space: U+0085 splits, U+001C does not.
        self.assertEqual(core.count_words("a\x1cb\u0085c"), 2)

    def test_config_is_checked(self):
        self.assertEqual(core.parse_config({"min_words": 2}), {"min_words": 2})
        with self.assertRaisesRegex(ValueError, "`min_word`"):
            core.parse_config({"min_word": 2})


if __name__ == "__main__":
    unittest.main()
