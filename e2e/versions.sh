# Versions the end-to-end suite runs, in one place. Sourced by every e2e script.
# Pinot: the newest release whose pinot-tools (the admin commands, with controller, broker and
# server) resolves with its dependencies from Maven Central.
PINOT_VERSION=0.11.0
# Trino: the newest release whose full server tarball (it carries the pinot plugin) resolves.
TRINO_VERSION=476
# Trino 476 needs Java 24 or newer.
TRINO_JAVA_HOME=${TRINO_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
PINOT_JAVA_HOME=${PINOT_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
