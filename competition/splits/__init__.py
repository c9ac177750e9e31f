"""The splits layer: adversarial validation, the split kinds (grouped, stratified, speaker clusters), saved folds."""
