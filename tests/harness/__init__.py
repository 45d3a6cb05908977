"""Test harnesses shared by the test tiers (moto Step Functions execution)."""
