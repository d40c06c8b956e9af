// The grpc-java (Netty) client of conformance/clients.sh: the same checks as
// ../clients_grpcio.py, printing "RESULT grpc-java MODE CHECK PASS|FAIL (SECONDS s) detail".
//
//   java -cp ... ClientsCheck MODE=HOST:PORT...
//
// MODE is direct (the upstream itself), plaintext or tls (pinot-proxy). Environment: UPSTREAM
// (host:port, asked for call outcomes), FORWARD_PORT (the upstream's port, sent as
// forward-port), CA_FILE (the proxy's certificate, for tls).

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.GrpcSslContexts;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import com.google.protobuf.ByteString;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import pinotproxy.conformance.OutcomeReq;
import pinotproxy.conformance.OutcomeResp;
import pinotproxy.conformance.Req;
import pinotproxy.conformance.Resp;

public final class ClientsCheck {
    static final int MAX = 64 << 20;
    static final long WAIT_MS = 10_000; // the bound on every call that is not meant to hang
    static final String STATUS_MESSAGE = "conformance: 100% not OK, ünïcödé ✓ \t%41";
    static final byte[][] BIN_VALUES = {allBytes(), {0}, "\u00ff\u00fe\u0000\u0001 trail=ing,comma".getBytes(StandardCharsets.ISO_8859_1)};
    static final SecureRandom RANDOM = new SecureRandom();
    static final Metadata.Key<String> CALL_ID = key("x-call-id");
    static final Metadata.Key<byte[]> ECHO_BIN = Metadata.Key.of("x-echo-bin", Metadata.BINARY_BYTE_MARSHALLER);
    static final Metadata.Key<byte[]> HEAD_BIN = Metadata.Key.of("x-head-bin", Metadata.BINARY_BYTE_MARSHALLER);
    static final Metadata.Key<byte[]> TRAIL_BIN = Metadata.Key.of("x-trail-bin", Metadata.BINARY_BYTE_MARSHALLER);

    static final MethodDescriptor<Req, Resp> UNARY = method("Unary", MethodDescriptor.MethodType.UNARY);
    static final MethodDescriptor<Req, Resp> SERVER_STREAM = method("ServerStream", MethodDescriptor.MethodType.SERVER_STREAMING);
    static final MethodDescriptor<Req, Resp> CLIENT_STREAM = method("ClientStream", MethodDescriptor.MethodType.CLIENT_STREAMING);
    static final MethodDescriptor<Req, Resp> BIDI = method("Bidi", MethodDescriptor.MethodType.BIDI_STREAMING);
    static final MethodDescriptor<OutcomeReq, OutcomeResp> OUTCOME = MethodDescriptor.<OutcomeReq, OutcomeResp>newBuilder()
            .setType(MethodDescriptor.MethodType.UNARY)
            .setFullMethodName("conformance.Echo/Outcome")
            .setRequestMarshaller(ProtoUtils.marshaller(OutcomeReq.getDefaultInstance()))
            .setResponseMarshaller(ProtoUtils.marshaller(OutcomeResp.getDefaultInstance()))
            .build();

    static MethodDescriptor<Req, Resp> method(String name, MethodDescriptor.MethodType type) {
        return MethodDescriptor.<Req, Resp>newBuilder()
                .setType(type)
                .setFullMethodName("conformance.Echo/" + name)
                .setRequestMarshaller(ProtoUtils.marshaller(Req.getDefaultInstance()))
                .setResponseMarshaller(ProtoUtils.marshaller(Resp.getDefaultInstance()))
                .build();
    }

    static Metadata.Key<String> key(String name) {
        return Metadata.Key.of(name, Metadata.ASCII_STRING_MARSHALLER);
    }

    static byte[] allBytes() {
        byte[] b = new byte[256];
        for (int i = 0; i < b.length; i++) b[i] = (byte) i;
        return b;
    }

    static byte[] random(int n) {
        byte[] b = new byte[n];
        RANDOM.nextBytes(b);
        return b;
    }

    static final class Fail extends Exception {
        Fail(String message) {
            super(message);
        }
    }

    static void check(boolean cond, String what) throws Fail {
        if (!cond) throw new Fail(what);
    }

    /** One mode's target: a channel, and per call the routing headers and captured metadata. */
    static final class Target {
        final Channel channel;
        final Channel upstream;
        final AtomicReference<Metadata> headers = new AtomicReference<>();
        final AtomicReference<Metadata> trailers = new AtomicReference<>();

        Target(Channel channel, Channel upstream) {
            this.channel = channel;
            this.upstream = upstream;
        }

        /** A channel whose calls carry the routing headers, extra and capture what comes back. */
        Channel calls(Metadata extra) {
            Metadata md = new Metadata();
            md.put(key("forward-host"), "127.0.0.1");
            md.put(key("forward-port"), System.getenv("FORWARD_PORT"));
            if (extra != null) md.merge(extra);
            headers.set(null);
            trailers.set(null);
            return ClientInterceptors.intercept(channel,
                    MetadataUtils.newCaptureMetadataInterceptor(headers, trailers),
                    MetadataUtils.newAttachHeadersInterceptor(md));
        }

        Channel calls() {
            return calls(null);
        }

        String outcome(String callId) {
            try {
                return ClientCalls.blockingUnaryCall(upstream, OUTCOME,
                        CallOptions.DEFAULT.withDeadlineAfter(WAIT_MS, TimeUnit.MILLISECONDS),
                        OutcomeReq.newBuilder().setCallId(callId).setWaitMs(5000).build()).getOutcome();
            } catch (StatusRuntimeException e) {
                return "Outcome failed: " + e.getStatus();
            }
        }
    }

    static CallOptions within(long ms) {
        return CallOptions.DEFAULT.withDeadlineAfter(ms, TimeUnit.MILLISECONDS);
    }

    static Metadata withCallId(String id) {
        Metadata md = new Metadata();
        md.put(CALL_ID, id);
        return md;
    }

    static void wantStatus(StatusRuntimeException e, Status.Code code) throws Fail {
        Status s = e.getStatus();
        check(s.getCode() == code && STATUS_MESSAGE.equals(s.getDescription()),
                "got " + s.getCode() + " \"" + s.getDescription() + "\", expected " + code + " \"" + STATUS_MESSAGE + "\"");
    }

    static void trailersOnly(Target t) throws Exception {
        try {
            ClientCalls.blockingUnaryCall(t.calls(), UNARY, within(WAIT_MS), Req.newBuilder()
                    .setStatusCode(Status.Code.FAILED_PRECONDITION.value()).setStatusMessage(STATUS_MESSAGE).build());
            throw new Fail("expected FAILED_PRECONDITION, got OK");
        } catch (StatusRuntimeException e) {
            wantStatus(e, Status.Code.FAILED_PRECONDITION);
        }
    }

    static void statusAfterMessages(Target t) throws Exception {
        Iterator<Resp> it = ClientCalls.blockingServerStreamingCall(t.calls(), SERVER_STREAM, within(WAIT_MS),
                Req.newBuilder().setCount(3).setSize(100)
                        .setStatusCode(Status.Code.RESOURCE_EXHAUSTED.value()).setStatusMessage(STATUS_MESSAGE).build());
        MessageDigest digest = MessageDigest.getInstance("SHA-256");
        int n = 0;
        try {
            while (it.hasNext()) {
                digest.update(it.next().getPayload().toByteArray());
                n++;
            }
            throw new Fail("expected RESOURCE_EXHAUSTED, got OK after " + n + " messages");
        } catch (StatusRuntimeException e) {
            wantStatus(e, Status.Code.RESOURCE_EXHAUSTED);
            check(n == 3, n + " messages before the status, expected 3");
            String got = HexFormat.of().formatHex(digest.digest());
            String want = e.getTrailers() == null ? null : e.getTrailers().get(key("x-digest"));
            check(got.equals(want), "digest of the messages " + got + ", trailer " + want);
        }
    }

    static List<byte[]> values(Metadata md, Metadata.Key<byte[]> key) {
        List<byte[]> out = new ArrayList<>();
        if (md != null && md.getAll(key) != null) md.getAll(key).forEach(out::add);
        return out;
    }

    static boolean sameBytes(List<byte[]> got) {
        if (got.size() != BIN_VALUES.length) return false;
        for (int i = 0; i < BIN_VALUES.length; i++) if (!Arrays.equals(got.get(i), BIN_VALUES[i])) return false;
        return true;
    }

    static String show(List<byte[]> values) {
        List<String> out = new ArrayList<>();
        for (byte[] v : values) out.add(HexFormat.of().formatHex(v));
        return out.toString();
    }

    static void binaryMetadata(Target t) throws Exception {
        Metadata md = new Metadata();
        for (byte[] v : BIN_VALUES) md.put(ECHO_BIN, v);
        Resp resp = ClientCalls.blockingUnaryCall(t.calls(md), UNARY, within(WAIT_MS),
                Req.newBuilder().setPayload(ByteString.copyFromUtf8("md")).build());
        List<byte[]> head = values(t.headers.get(), HEAD_BIN);
        List<byte[]> trail = values(t.trailers.get(), TRAIL_BIN);
        check(sameBytes(head), "headers x-head-bin " + show(head) + ", expected " + show(Arrays.asList(BIN_VALUES)));
        check(sameBytes(trail), "trailers x-trail-bin " + show(trail) + ", expected " + show(Arrays.asList(BIN_VALUES)));
        check(resp.getPayload().toStringUtf8().equals("md"), "payload changed");
    }

    static void largeMessage(Target t) throws Exception {
        byte[] payload = random(8 << 20);
        Resp resp = ClientCalls.blockingUnaryCall(t.calls(), UNARY, within(30_000),
                Req.newBuilder().setPayload(ByteString.copyFrom(payload)).build());
        check(resp.getPayload().size() == payload.length, resp.getPayload().size() + " bytes back, sent " + payload.length);
        check(Arrays.equals(resp.getPayload().toByteArray(), payload), "8 MiB came back with different bytes");
    }

    static void serverStream(Target t) throws Exception {
        int n = 1000;
        Iterator<Resp> it = ClientCalls.blockingServerStreamingCall(t.calls(), SERVER_STREAM, within(60_000),
                Req.newBuilder().setCount(n).setSize(32768).build());
        MessageDigest digest = MessageDigest.getInstance("SHA-256");
        int count = 0;
        long total = 0;
        while (it.hasNext()) {
            Resp r = it.next();
            digest.update(r.getPayload().toByteArray());
            count++;
            total += r.getPayload().size();
        }
        check(count == n, count + " messages, expected " + n);
        String got = HexFormat.of().formatHex(digest.digest());
        String want = t.trailers.get() == null ? null : t.trailers.get().get(key("x-digest"));
        check(got.equals(want), "SHA-256 of the " + total + " bytes received " + got + ", upstream sent " + want);
    }

    static final class Collect<T> implements StreamObserver<T> {
        final LinkedBlockingQueue<Object> events = new LinkedBlockingQueue<>();
        static final Object DONE = new Object();

        public void onNext(T value) {
            events.add(value);
        }

        public void onError(Throwable t) {
            events.add(t);
        }

        public void onCompleted() {
            events.add(DONE);
        }

        /** The next event: a message, a Throwable or DONE; a Fail after WAIT_MS. */
        Object next() throws Exception {
            Object e = events.poll(WAIT_MS, TimeUnit.MILLISECONDS);
            if (e == null) throw new Fail("nothing arrived within " + WAIT_MS + " ms");
            return e;
        }
    }

    static void clientStream(Target t) throws Exception {
        Collect<Resp> answer = new Collect<>();
        StreamObserver<Req> requests = ClientCalls.asyncClientStreamingCall(
                t.calls().newCall(CLIENT_STREAM, within(60_000)), answer);
        MessageDigest digest = MessageDigest.getInstance("SHA-256");
        int n = 0;
        for (int round = 0; round < 20; round++) {
            for (int size : new int[] {0, 1, 5, 16384, 100000, 1 << 20}) {
                byte[] b = random(size);
                digest.update(b);
                n++;
                requests.onNext(Req.newBuilder().setPayload(ByteString.copyFrom(b)).build());
            }
        }
        requests.onCompleted();
        Object first = answer.next();
        if (first instanceof Throwable e) throw new Fail(String.valueOf(Status.fromThrowable(e)));
        byte[] want = digest.digest();
        byte[] got = ((Resp) first).getPayload().toByteArray();
        check(Arrays.equals(got, want), "upstream digest " + HexFormat.of().formatHex(got) + ", sent " + HexFormat.of().formatHex(want));
        check(answer.next() == Collect.DONE, "no clean end after the answer");
        String count = t.trailers.get() == null ? null : t.trailers.get().get(key("x-count"));
        check(String.valueOf(n).equals(count), "x-count " + count + ", expected " + n);
    }

    // Ping-pong: each message is sent only once the previous echo came back, so nothing may be
    // held back on the way.
    static void bidi(Target t) throws Exception {
        Collect<Resp> echoes = new Collect<>();
        StreamObserver<Req> requests = ClientCalls.asyncBidiStreamingCall(t.calls().newCall(BIDI, within(60_000)), echoes);
        for (int i = 0; i < 100; i++) {
            byte[] payload = random(1 + i * 997);
            requests.onNext(Req.newBuilder().setPayload(ByteString.copyFrom(payload)).build());
            Object e = echoes.next();
            if (e instanceof Throwable err) throw new Fail("echo " + i + ": " + Status.fromThrowable(err));
            check(e instanceof Resp r && Arrays.equals(r.getPayload().toByteArray(), payload), "echo " + i + " differs");
        }
        requests.onCompleted();
        Object end = echoes.next();
        check(end == Collect.DONE, "after the last echo: " + (end instanceof Throwable err ? Status.fromThrowable(err) : "a message"));
    }

    static void deadline(Target t) throws Exception {
        String id = UUID.randomUUID().toString();
        long started = System.nanoTime();
        try {
            ClientCalls.blockingUnaryCall(t.calls(withCallId(id)), UNARY, within(500), Req.newBuilder().setHoldMs(20000).build());
            throw new Fail("expected DEADLINE_EXCEEDED, got OK");
        } catch (StatusRuntimeException e) {
            double took = (System.nanoTime() - started) / 1e9;
            check(e.getStatus().getCode() == Status.Code.DEADLINE_EXCEEDED,
                    "got " + e.getStatus().getCode() + " \"" + e.getStatus().getDescription() + "\", expected DEADLINE_EXCEEDED");
            check(took < 5, String.format(Locale.ROOT, "DEADLINE_EXCEEDED after %.1f s for a 0.5 s deadline", took));
        }
        String seen = t.outcome(id);
        check(seen.equals("cancelled") || seen.equals("deadline"), "upstream says the call ended \"" + seen + "\"");
    }

    static void cancel(Target t) throws Exception {
        String id = UUID.randomUUID().toString();
        ClientCall<Req, Resp> call = t.calls(withCallId(id)).newCall(SERVER_STREAM, within(30_000));
        Iterator<Resp> it = ClientCalls.blockingServerStreamingCall(call, Req.newBuilder().setCount(1).setSize(10).setHoldMs(20000).build());
        it.next(); // the call has reached the upstream
        call.cancel("conformance: cancelled by the client", null);
        String seen = t.outcome(id);
        check(seen.equals("cancelled"), "upstream says the call ended \"" + seen + "\", expected \"cancelled\"");
    }

    interface Check {
        void run(Target t) throws Exception;
    }

    record Named(String name, Check fn) {}

    static final List<Named> CHECKS = List.of(
            new Named("trailers-only-status", ClientsCheck::trailersOnly),
            new Named("status-after-messages", ClientsCheck::statusAfterMessages),
            new Named("binary-metadata", ClientsCheck::binaryMetadata),
            new Named("large-message", ClientsCheck::largeMessage),
            new Named("server-stream", ClientsCheck::serverStream),
            new Named("client-stream", ClientsCheck::clientStream),
            new Named("bidi", ClientsCheck::bidi),
            new Named("deadline", ClientsCheck::deadline),
            new Named("cancel", ClientsCheck::cancel));

    static ManagedChannel channel(String mode, String target) throws Exception {
        NettyChannelBuilder b = NettyChannelBuilder.forTarget(target).maxInboundMessageSize(MAX)
                .maxInboundMetadataSize(1 << 20);
        if (mode.equals("tls")) {
            b.sslContext(GrpcSslContexts.forClient().trustManager(new File(System.getenv("CA_FILE"))).build());
        } else {
            b.usePlaintext();
        }
        return b.build();
    }

    public static void main(String[] args) throws Exception {
        ManagedChannel upstream = channel("direct", System.getenv("UPSTREAM"));
        for (String arg : args) {
            String mode = arg.substring(0, arg.indexOf('='));
            ManagedChannel ch = channel(mode, arg.substring(arg.indexOf('=') + 1));
            Target t = new Target(ch, upstream);
            for (Named c : CHECKS) {
                long started = System.nanoTime();
                String result = "PASS";
                String detail = "";
                try {
                    c.fn().run(t);
                } catch (Fail e) {
                    result = "FAIL";
                    detail = e.getMessage();
                } catch (StatusRuntimeException e) {
                    result = "FAIL";
                    detail = e.getStatus().toString();
                } catch (Exception e) {
                    result = "FAIL";
                    detail = e.toString();
                }
                double took = (System.nanoTime() - started) / 1e9;
                System.out.println(String.format(Locale.ROOT, "RESULT grpc-java %s %s %s (%.2f s) %s",
                        mode, c.name(), result, took, detail.replace('\n', ' ')).strip());
                System.out.flush();
            }
            ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
        upstream.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
}
