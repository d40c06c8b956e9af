// Queries Pinot servers directly over gRPC, the way Trino's Pinot connector does:
//   java -cp 'pinot-lib/*' GrpcCheck.java PORT AUTHORIZATION|- HOST=SEGMENT[,SEGMENT...] ...
// For each HOST it sends `SELECT COUNT(*) FROM e2e_OFFLINE` over the listed segments (with
// metadata "authorization" unless "-") and prints "HOST rows=<n>", or "HOST error=<...>".
// Exit status 0 only if every server answered without an exception.
import java.util.Arrays;
import java.util.Iterator;
import org.apache.pinot.common.proto.Server;
import org.apache.pinot.common.utils.DataTable;
import org.apache.pinot.common.utils.grpc.GrpcQueryClient;
import org.apache.pinot.common.utils.grpc.GrpcRequestBuilder;
import org.apache.pinot.core.common.datatable.DataTableFactory;

public class GrpcCheck {
  public static void main(String[] args) {
    int port = Integer.parseInt(args[0]);
    String authorization = args[1];
    boolean ok = true;
    for (int i = 2; i < args.length; i++) {
      String host = args[i].substring(0, args[i].indexOf('='));
      String segments = args[i].substring(args[i].indexOf('=') + 1);
      try {
        System.out.println(host + " rows=" + count(host, port, authorization, segments));
      } catch (Exception e) {
        ok = false;
        System.out.println(host + " error=" + e.toString().replace('\n', ' '));
      }
    }
    System.exit(ok ? 0 : 1);
  }

  static long count(String host, int port, String authorization, String segments) throws Exception {
    GrpcQueryClient client = new GrpcQueryClient(host, port);
    try {
      Server.ServerRequest request = new GrpcRequestBuilder().setRequestId(1).setBrokerId("e2e-grpc-check")
          .setEnableStreaming(true).setSql("SELECT COUNT(*) FROM e2e_OFFLINE")
          .setSegments(Arrays.asList(segments.split(","))).build();
      if (!authorization.equals("-")) {
        request = request.toBuilder().putMetadata("authorization", authorization).build();
      }
      long count = 0;
      Iterator<Server.ServerResponse> it = client.submit(request);
      while (it.hasNext()) {
        DataTable table = DataTableFactory.getDataTable(it.next().getPayload().asReadOnlyByteBuffer());
        if (!table.getExceptions().isEmpty()) {
          throw new IllegalStateException("exceptions " + table.getExceptions());
        }
        if (table.getDataSchema() != null && table.getNumberOfRows() > 0) {
          count += table.getLong(0, 0);
        }
      }
      return count;
    } finally {
      client.close();
    }
  }
}
