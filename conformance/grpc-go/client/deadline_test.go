package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"

	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	pb "pinot-proxy/conformance/grpc-go/echopb"
)

// rawUnary sends one gRPC call with Go's own HTTP/2 client (h2c, or TLS with ALPN h2) and a
// grpc-timeout that no client timer enforces, so that whatever ends the call is the proxy's
// (or the upstream's) doing. It returns the grpc-status and grpc-message the proxy sent.
func rawUnary(tr *http2.Transport, scheme, target, timeout string, req *pb.Req) (string, string, error) {
	msg, _ := proto.Marshal(req)
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	hreq, _ := http.NewRequestWithContext(ctx, "POST", scheme+"://"+target+"/conformance.Echo/Unary",
		bytes.NewReader(body))
	hreq.Header.Set("content-type", "application/grpc")
	hreq.Header.Set("te", "trailers")
	hreq.Header.Set("grpc-timeout", timeout)
	hreq.Header.Set("forward-host", "127.0.0.1")
	hreq.Header.Set("forward-port", os.Getenv("FORWARD_PORT"))
	resp, err := tr.RoundTrip(hreq)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", "", fmt.Errorf("reading the body: %w", err)
	}
	code := resp.Trailer.Get("grpc-status") + resp.Header.Get("grpc-status")
	text := resp.Trailer.Get("grpc-message") + resp.Header.Get("grpc-message")
	return code, text, nil
}

func rawTransport(mode string) (*http2.Transport, string, error) {
	if mode != "tls" {
		return &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}, "http", nil
	}
	pem, err := os.ReadFile(os.Getenv("CA_FILE"))
	if err != nil {
		return nil, "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, "https", nil
}

// proxyDeadline: calls whose grpc-timeout (50 ms) passes while the upstream holds them must
// each end with DEADLINE_EXCEEDED (4) from the proxy, however the upstream ends its side:
// grpc-go servers (like grpc-java's, Pinot's) reset the stream with CANCEL at the deadline
// they were given, which is the time left that the proxy forwarded. Which of the proxy's own
// timer and that reset comes first is a race, so it is run 100 times on one connection.
func proxyDeadline(e env) error {
	tr, scheme, err := rawTransport(e.mode)
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	const calls = 100
	counts := map[string]int{}
	bad := 0
	for range calls {
		code, text, err := rawUnary(tr, scheme, e.target, "50m", &pb.Req{HoldMs: 20000})
		if err != nil {
			code, text = "error", err.Error()
		}
		if code != "4" {
			bad++
			counts[code+" "+text]++
		}
	}
	if bad == 0 {
		return nil
	}
	var seen []string
	for key, n := range counts {
		seen = append(seen, fmt.Sprintf("%d× %q", n, key))
	}
	sort.Strings(seen)
	return fmt.Errorf("%d of %d calls with grpc-timeout 50m ended otherwise than DEADLINE_EXCEEDED: %s",
		bad, calls, strings.Join(seen, ", "))
}
