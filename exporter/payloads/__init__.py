"""Typed upstream payloads: what the sources fetch, validated before analysis turns it into facts."""
