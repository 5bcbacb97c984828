"""Thin servicers: protobuf in -> core call -> protobuf out."""
