"""Tests of the provisioning layer (provisioning/) and the LB CoreDNS files (coredns/)."""
