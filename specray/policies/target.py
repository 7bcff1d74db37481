"""`target`: no drafting at all; the target decodes alone (the reference every speedup is measured against)."""

from specray.policies.kinds import PolicyKind, register

KIND = register(PolicyKind("target", build=lambda knobs, references: None, drafts=False))
