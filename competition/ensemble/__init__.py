"""The ensemble layer: blend maths (equal, greedy-fitted, stacked), duplicate-aware consensus, the shift check."""
