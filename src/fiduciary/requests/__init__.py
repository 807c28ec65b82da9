"""Rights requests: intake, identity verification, deadlines, planning, access packages,
erasure and masking, exemptions, and notifying recipients."""
