# The two commands of the README. Both do all set-up first (idempotent, quick when done).
.PHONY: demo test setup bench serve schema event-types

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	@scripts/test.sh

bench: setup
	@bash -c 'source scripts/env.sh && cargo bench --bench engine_overhead --bench validation'

serve: setup
	@target/release/weft serve

# workflows/schema.json, suggesting only the models the repository ships (tests/cli.rs checks it).
schema:
	@scripts/schema.sh

# web-ui/src/generated/events.ts from the server's event types (tests/event_types.rs checks it).
event-types:
	@scripts/event-types.sh
