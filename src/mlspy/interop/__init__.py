"""The MLS community interop surface: a gRPC ``MLSClient`` server (``server``) for the
mlswg interop harness and a scenario runner (``runner``) that drives any such servers."""
