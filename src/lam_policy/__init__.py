"""lam_policy: retargeting, the Large Action Model, training and policy_node (issues 4 and 6)."""
