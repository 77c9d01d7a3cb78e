# saerun recipes (https://github.com/casey/just). Each is the README's command.

# Run the toy-superposition experiment (offline, built-in data).
toy:
    cargo run --release -- run experiments/toy_superposition.toml

# Run the test suite.
test:
    cargo test --release

# What CI runs: formatting, lints, tests.
ci:
    .ci/run
