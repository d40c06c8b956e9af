// A Trino-shaped PinotQueryServer/Submit call made with grpc-java, the gRPC stack Trino's Pinot
// connector uses. Run as a single-file program with the connector's own jars on the class path:
//
//   java -cp 'plugin/pinot/*' SubmitCheck.java TARGET FORWARD_HOST FORWARD_PORT SQL [SEGMENT...]
//
// TARGET is host:port of the proxy or of a Pinot server. Prints one line:
//   status=OK messages=N bytes=B types=data,...,metadata
//   status=NOT_FOUND message=...
// and exits 0 when the call ended with a status (any status), 1 when the client itself failed.

import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.MethodDescriptor;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

public class SubmitCheck {
    static final class Bytes implements MethodDescriptor.Marshaller<byte[]> {
        public InputStream stream(byte[] value) {
            return new ByteArrayInputStream(value);
        }

        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: SubmitCheck TARGET FORWARD_HOST FORWARD_PORT SQL [SEGMENT...]");
            System.exit(2);
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        metadata.put("FORWARD_HOST", args[1]);
        metadata.put("FORWARD_PORT", args[2]);
        metadata.put("requestId", "0");
        metadata.put("brokerId", "unknown");
        metadata.put("enableTrace", "false");
        metadata.put("enableStreaming", "true");
        metadata.put("payloadType", "sql");
        List<String> segments = new ArrayList<>();
        for (int i = 4; i < args.length; i++) {
            segments.add(args[i]);
        }
        byte[] request = serverRequest(metadata, args[3], segments);

        MethodDescriptor<byte[], byte[]> submit = MethodDescriptor.<byte[], byte[]>newBuilder()
                .setType(MethodDescriptor.MethodType.SERVER_STREAMING)
                .setFullMethodName("org.apache.pinot.common.proto.PinotQueryServer/Submit")
                .setRequestMarshaller(new Bytes())
                .setResponseMarshaller(new Bytes())
                .build();
        ManagedChannel channel = ManagedChannelBuilder.forTarget(args[0])
                .usePlaintext()
                .maxInboundMessageSize(128 * 1024 * 1024)
                .build();
        long messages = 0;
        long bytes = 0;
        List<String> types = new ArrayList<>();
        try {
            Iterator<byte[]> responses = ClientCalls.blockingServerStreamingCall(
                    channel, submit, CallOptions.DEFAULT.withDeadlineAfter(60, TimeUnit.SECONDS), request);
            while (responses.hasNext()) {
                byte[] response = responses.next();
                messages++;
                bytes += response.length;
                types.add(responseType(response));
            }
            System.out.println("status=OK messages=" + messages + " bytes=" + bytes
                    + " types=" + String.join(",", types));
        } catch (StatusRuntimeException e) {
            String description = e.getStatus().getDescription();
            System.out.println("status=" + e.getStatus().getCode() + " message="
                    + (description == null ? "" : description.replace('\n', ' ')));
        } finally {
            channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
    }

    // ServerRequest: 1 metadata map<string,string>, 2 sql string, 3 segments repeated string.
    static byte[] serverRequest(Map<String, String> metadata, String sql, List<String> segments) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (Map.Entry<String, String> entry : metadata.entrySet()) {
            ByteArrayOutputStream kv = new ByteArrayOutputStream();
            field(kv, 1, entry.getKey().getBytes(StandardCharsets.UTF_8));
            field(kv, 2, entry.getValue().getBytes(StandardCharsets.UTF_8));
            field(out, 1, kv.toByteArray());
        }
        field(out, 2, sql.getBytes(StandardCharsets.UTF_8));
        for (String segment : segments) {
            field(out, 3, segment.getBytes(StandardCharsets.UTF_8));
        }
        return out.toByteArray();
    }

    static void field(ByteArrayOutputStream out, int number, byte[] value) {
        varint(out, (number << 3) | 2);
        varint(out, value.length);
        out.writeBytes(value);
    }

    static void varint(ByteArrayOutputStream out, long value) {
        while ((value & ~0x7FL) != 0) {
            out.write((int) ((value & 0x7F) | 0x80));
            value >>>= 7;
        }
        out.write((int) value);
    }

    // ServerResponse: 1 metadata map<string,string>; returns metadata["responseType"] or "-".
    static String responseType(byte[] message) {
        int[] at = {0};
        String type = "-";
        while (at[0] < message.length) {
            long key = readVarint(message, at);
            int wire = (int) (key & 7);
            if (wire == 2) {
                int length = (int) readVarint(message, at);
                int end = at[0] + length;
                if ((key >>> 3) == 1) {
                    String name = null;
                    String value = null;
                    while (at[0] < end) {
                        long inner = readVarint(message, at);
                        int innerLength = (int) readVarint(message, at);
                        String text = new String(message, at[0], innerLength, StandardCharsets.UTF_8);
                        at[0] += innerLength;
                        if ((inner >>> 3) == 1) {
                            name = text;
                        } else {
                            value = text;
                        }
                    }
                    if ("responseType".equals(name)) {
                        type = value;
                    }
                }
                at[0] = end;
            } else if (wire == 0) {
                readVarint(message, at);
            } else {
                return "?";
            }
        }
        return type;
    }

    static long readVarint(byte[] message, int[] at) {
        long value = 0;
        int shift = 0;
        while (true) {
            byte b = message[at[0]++];
            value |= (long) (b & 0x7F) << shift;
            if ((b & 0x80) == 0) {
                return value;
            }
            shift += 7;
        }
    }
}
