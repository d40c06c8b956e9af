# Versions the end-to-end suite runs, in one place. Sourced by every e2e script.
#
# Pinot: the newest release whose pinot-tools (the admin commands, with controller, broker and
# server) resolves with its dependencies from Maven Central.
PINOT_VERSION=0.11.0
PINOT_JAVA_HOME=${PINOT_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
# Trino: the newest release whose Pinot connector reads the DataTable versions Pinot 0.11 sends
# (Trino 476 bundles Pinot 1.3 libraries, which read version 4 of the 1.x format only) and
# whose trino-main and trino-pinot plugin zip resolve. Trino 426 bundles Pinot 0.12.1 and
# runs on Java 17.
TRINO_VERSION=426
TRINO_JAVA_HOME=${TRINO_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
# The cli is only a second query client for the self-test; 426's is not served.
TRINO_CLI_VERSION=476
TRINO_CLI_JAVA_HOME=${TRINO_CLI_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
