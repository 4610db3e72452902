"""The protocol and the engine of every run (no fedml): clients and servers (:mod:`.federated`),
step arithmetic (:mod:`.steps`), client sampling (:mod:`.sampling`), the server-side coordinator
(:mod:`.coordinator`), upload validation (:mod:`.validation`), tasks
(:mod:`.tasks`), local loops and the batched engine (:mod:`.loops`, :mod:`.batched`), what a run
builds from its config (:mod:`.setup`) and its results folder (:mod:`.results`)."""
