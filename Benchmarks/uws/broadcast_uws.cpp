// W7 reference: uWebSockets' pub/sub. Every connection on /broadcast subscribes to one topic;
// every message it receives is published to that topic (the sender included). One thread.
// Built by build.sh beside this file against uWebSockets and uSockets in /tmp (never committed).
//
//   broadcast-uws PORT
#include "App.h"
#include <cstdlib>
#include <iostream>

struct PerSocketData {};

int main(int argc, char **argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 9001;
    uWS::App app;
    app.ws<PerSocketData>("/broadcast", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 16 * 1024 * 1024,
        .idleTimeout = 120,
        .maxBackpressure = 16 * 1024 * 1024,  // no message is dropped for a slow reader
        .sendPingsAutomatically = false,
        .open = [](auto *ws) { ws->subscribe("all"); },
        .message = [&app](auto * /*ws*/, std::string_view message, uWS::OpCode opCode) { app.publish("all", message, opCode); },
    }).listen("127.0.0.1", port, [port](auto *listenSocket) {
        if (!listenSocket) { std::cerr << "broadcast-uws: cannot listen on " << port << std::endl; std::exit(1); }
        std::cout << "broadcast-uws listening on 127.0.0.1:" << port << std::endl;
    });
    app.run();
}
