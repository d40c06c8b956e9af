//! Which Pinot component a REST path goes to: the longest matching `[[rest.routes]]` prefix,
//! else the built-in table of broker paths; everything else goes to the controller.

use crate::config::{Component, RouteConfig};

/// Path prefixes served by the broker; every other path goes to the controller.
/// From Pinot's broker resources: `PinotClientRequest` (`/query/sql`, `/query`,
/// `/query/timeseries`, `/query/compare`, `DELETE /query/{id}`, `/timeseries/api/v1/...`),
/// `PinotBrokerDebug` and `ResponseStoreResource` (cursors).
const BROKER_PREFIXES: [&str; 7] = [
    "/query",
    "/timeseries",
    "/debug/routingTable",
    "/debug/routingTableWithOptionalSegments",
    "/debug/timeBoundary",
    "/debug/serverRoutingStats",
    "/responseStore",
];

/// Whether `prefix` matches `path` at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The component a path goes to: the longest matching user route, else the built-in table.
pub(super) fn route(routes: &[RouteConfig], path: &str) -> Component {
    let user = routes
        .iter()
        .filter(|route| prefix_matches(&route.prefix, path))
        .max_by_key(|route| route.prefix.len())
        .map(|route| route.to);
    user.unwrap_or_else(|| {
        if BROKER_PREFIXES
            .iter()
            .any(|prefix| prefix_matches(prefix, path))
        {
            Component::Broker
        } else {
            Component::Controller
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_routes() {
        let cases = [
            ("/query/sql", Component::Broker),
            ("/query", Component::Broker),
            ("/query/timeseries", Component::Broker),
            ("/query/12345", Component::Broker),
            ("/timeseries/api/v1/query_range", Component::Broker),
            ("/debug/routingTable/airlineStats", Component::Broker),
            ("/debug/routingTable/sql", Component::Broker),
            (
                "/debug/routingTableWithOptionalSegments/t",
                Component::Broker,
            ),
            ("/debug/timeBoundary/airlineStats", Component::Broker),
            ("/debug/serverRoutingStats", Component::Broker),
            ("/responseStore/123/results", Component::Broker),
            ("/tables", Component::Controller),
            ("/tables/t/schema", Component::Controller),
            ("/tables/t/instances", Component::Controller),
            ("/instances/Broker_b_8099", Component::Controller),
            ("/schemas/t", Component::Controller),
            ("/segments/t", Component::Controller),
            ("/health", Component::Controller),
            ("/debug/tables/t", Component::Controller),
            ("/queries", Component::Controller),
            ("/querysomething", Component::Controller),
            ("/sql", Component::Controller),
            ("/", Component::Controller),
            ("//query/sql", Component::Controller),
        ];
        for (path, expected) in cases {
            assert_eq!(route(&[], path), expected, "{path}");
        }
    }

    #[test]
    fn user_routes_win_longest_first_at_segment_boundaries() {
        let routes = [
            RouteConfig {
                prefix: "/debug".into(),
                to: Component::Controller,
            },
            RouteConfig {
                prefix: "/tables/special".into(),
                to: Component::Broker,
            },
            RouteConfig {
                prefix: "/tables/special/schema".into(),
                to: Component::Controller,
            },
        ];
        let cases = [
            // A user route beats a longer built-in one.
            ("/debug/routingTable/t", Component::Controller),
            ("/tables/special", Component::Broker),
            ("/tables/special/instances", Component::Broker),
            ("/tables/special/schema", Component::Controller),
            ("/tables/specialty", Component::Controller),
            ("/query/sql", Component::Broker),
        ];
        for (path, expected) in cases {
            assert_eq!(route(&routes, path), expected, "{path}");
        }
        let everything = [RouteConfig {
            prefix: "/".into(),
            to: Component::Broker,
        }];
        assert_eq!(route(&everything, "/tables"), Component::Broker);
    }
}
