// Starts a Trino server from trino-main's classes. The module holding Trino's own main class
// (trino-server-main) is not on Maven Central for this version, and its main does no more than
// this: start io.trino.server.Server with the version string.
//
//   java -cp 'lib/*' -Dconfig=etc/config.properties ... StartTrino.java VERSION
public class StartTrino {
    public static void main(String[] args) {
        new io.trino.server.Server().start(args.length > 0 ? args[0] : "unknown");
    }
}
