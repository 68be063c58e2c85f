fn main() {
    capnpc::CompilerCommand::new()
        .file("api.capnp")
        .run()
        .expect("compiling schema/api.capnp (is Debian's `capnproto` installed?)");
}
