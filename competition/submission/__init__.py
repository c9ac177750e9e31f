"""The submission layer: blending finished runs into a validated submission, and scoring one."""
