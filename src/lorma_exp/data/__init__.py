"""Task families: raw rows -> tokenised datasets, a collate function and an evaluator."""
