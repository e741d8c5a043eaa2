//! Servers on ports inside the kernel's ephemeral range (issue #18): `up` must never connect to a
//! port before its server has bound it, because such a connect can take the port itself as its
//! source port, connect to itself, and leave a TIME-WAIT that keeps the server from binding it.

mod common;

use common::{Stack, text};
use nanika_testkit::{TempProject, ephemeral_ports, free_ephemeral_port, steer_source_ports_below};

/// Before every cold `up`, the kernel's source-port counter for each server's port is steered to
/// just below that port, so that a connect to the port before the server binds it would very
/// likely connect to itself (the failure of the issue: `could not bind … Address already in use`,
/// then a minute of `port … is already in use`). Twenty cold cycles in a row must all succeed.
#[test]
fn twenty_cold_cycles_on_ephemeral_ports_with_the_port_counter_steered_all_succeed() {
    let range = ephemeral_ports();
    let (pg_port, redis_port) = (free_ephemeral_port(), free_ephemeral_port());
    assert!(range.contains(pg_port) && range.contains(redis_port));
    let stack = Stack::with_ports(TempProject::empty(), None, pg_port, redis_port);

    let lint = stack.run(&["config", "lint"]);
    let said = text(&lint);
    assert!(
        said.contains("port-in-ephemeral-range") && said.contains(&pg_port.to_string()),
        "config lint warns about a port inside the ephemeral range:\n{said}"
    );

    for cycle in 1..=20 {
        for port in [pg_port, redis_port] {
            let source = steer_source_ports_below(port);
            assert!(source < port && port - source <= 16, "{source} {port}");
        }
        let up = stack.run(&["up"]);
        assert!(
            up.status.success(),
            "cold cycle {cycle} of 20 failed (postgres {pg_port}, redis {redis_port}):\n{}",
            text(&up)
        );
        let down = stack.run(&["down"]);
        assert!(down.status.success(), "cycle {cycle}: {}", text(&down));
    }
}

/// A port held by nothing but a closed connection in TIME-WAIT: `up` says so, and how long it
/// lasts, rather than naming no holder.
#[test]
fn a_port_held_by_a_time_wait_connection_is_named_as_such() {
    let stack = Stack::new();
    let port = stack.pg_port;
    // The side that closes first keeps the connection in TIME-WAIT; a listener without
    // SO_REUSEADDR makes it one that blocks every later bind of the port, as a connection that
    // connected to itself does.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    listener.listen(1).unwrap();
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(server);
    drop(listener);
    let mut byte = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut &client, &mut byte).unwrap(), 0);
    drop(client);
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());

    let up = stack.run(&["up"]);
    let said = text(&up);
    assert!(!up.status.success(), "{said}");
    assert!(
        said.contains(&format!("port {port} for postgres is already in use by a closed connection in TIME-WAIT (127.0.0.1:{port} -> 127.0.0.1:"))
            && said.contains("s more; no program holds the port")
            && said.contains("run `nanika up` again once it has expired"),
        "{said}"
    );
}
