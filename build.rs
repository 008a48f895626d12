//! Builds the glue between Kamailio and Rust:
//! 1. finds a Kamailio source tree (`KAMAILIO_SRC`, or the one `kamailio-headers/fetch.sh` laid out);
//! 2. asks that tree for the exact defines the core was built with (`make printcdefs`), one list
//!    fed to bindgen, to cc and to the C layout probe, so struct layouts agree with the binary;
//! 3. expands the version/flags strings the loader compares byte for byte, and checks them against
//!    the installed `kamailio -V`;
//! 4. generates allow-listed bindings and compiles `c_shim/`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM_FILES: &[&str] = &["c_shim/log.c", "c_shim/mem.c", "c_shim/api.c", "c_shim/proc.c", "c_shim/stats.c"];

fn main() {
    println!("cargo:rerun-if-env-changed=KAMAILIO_SRC");
    // The installed kamailio the strings are checked against: the first on PATH.
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-changed=c_shim");
    println!("cargo:rerun-if-changed=kamailio-headers/current");

    let src = kamailio_src();
    let defines = kamailio_defines(&src);
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());

    let version = expand_version(&src, &defines, &out, "sr_module.c");
    // `kamailio -V` prints ver.c's strings: the tree matches the binary if those agree.
    check_against_installed(&expand_version(&src, &defines, &out, "ver.c"));
    fs::write(out.join("version.rs"), version.to_rust()).unwrap();

    generate_bindings(&src, &defines, &out);
    write_c_layout(&src, &defines, &out);

    let mut build = shim_build(&src, &defines);
    for f in SHIM_FILES {
        build.file(f);
    }
    build.compile("tsilo_shim");
}

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: {msg}\n");
    std::process::exit(1);
}

/// The `src/` directory of a Kamailio tree: the user's own (`KAMAILIO_SRC`) or the fetched one.
fn kamailio_src() -> PathBuf {
    let src = match env::var_os("KAMAILIO_SRC") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("kamailio-headers/current/src"),
    };
    if !src.join("core/ver_defs.h").is_file() {
        fail(&format!(
            "no Kamailio source tree at {} (core/ver_defs.h missing).\n  \
             Fetch the one matching the installed kamailio with: make headers\n  \
             (or point KAMAILIO_SRC at your own kamailio/src)",
            src.display()
        ));
    }
    src
}

/// The core's C_DEFS, plus what Debian's build adds through CC_PMUTEX_OPTS, plus MOD_NAME.
fn kamailio_defines(src: &Path) -> Vec<String> {
    let make = |args: &[&str]| -> String {
        let out = Command::new("make")
            .arg("-s")
            .args(args)
            .current_dir(src)
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run make in {}: {e} (apt-get install make)", src.display())));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cdefs = make(&["printcdefs"]);
    let line = cdefs
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("-D"))
        .unwrap_or_else(|| fail(&format!("`make printcdefs` in {} printed no defines", src.display())));
    let mut defines = split_defines(line);
    // Debian builds with KSR_PTHREAD_MUTEX_SHARED (it adds TLS_PTHREAD_MUTEX_SHARED to the flags).
    let pmutex = make(&["printvar", "v=CC_PMUTEX_OPTS"]);
    for d in pmutex.lines().flat_map(split_defines) {
        if !defines.contains(&d) {
            defines.push(d);
        }
    }
    defines.push("-DMOD_NAME=\"tsilo\"".to_string());
    defines
}

/// Splits a define list on whitespace outside double quotes: `-DCOMPILER="gcc 12.2.0"` is one item.
fn split_defines(line: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    items.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    items.retain(|d| d.starts_with("-D"));
    items
}

fn shim_build(src: &Path, defines: &[String]) -> cc::Build {
    let mut b = cc::Build::new();
    b.include(src).include("c_shim").warnings(false).flag("-fPIC");
    // Log lines from Kamailio's inline functions name their header relative to the tree.
    b.flag(format!("-fmacro-prefix-map={}/=", src.display()));
    for d in defines {
        b.flag(d);
    }
    b
}

struct Version {
    full: String,
    flags: String,
    interface: u32,
}

impl Version {
    fn to_rust(&self) -> String {
        format!(
            "pub const FULL_VERSION: &core::ffi::CStr = c{:?};\n\
             pub const COMPILE_FLAGS: &core::ffi::CStr = c{:?};\n\
             pub const INTERFACE_VER: u32 = {};\n",
            self.full, self.flags, self.interface
        )
    }
}

/// The headers a core source file includes (quoted ones, in order), as the probe's includes.
/// The flags string depends on what came before `ver_defs.h`: from 6.1 on, `core/ver.c` (the
/// string `kamailio -V` prints) includes `mem/memcore.h` first, which turns MEMDBG's
/// DBG_SR_MEMORY into DBG_QM_MALLOC and the others; `core/sr_module.c` (the string the module
/// loader compares with) does not. Each probe copies its file's includes.
fn includes_of(src: &Path, file: &str) -> String {
    let text = fs::read_to_string(src.join("core").join(file)).unwrap_or_default();
    let mut includes = String::new();
    for inc in text.lines().filter_map(|l| l.trim().strip_prefix("#include \"")?.split('"').next()) {
        includes += &format!("#include \"core/{inc}\"\n");
        if inc == "ver_defs.h" {
            break; // what follows cannot change the strings
        }
    }
    if includes.is_empty() { "#include \"core/ver_defs.h\"\n#include \"core/sr_module.h\"\n".to_string() } else { includes }
}

/// Runs the preprocessor over the version macros as `file` sees them. The module's strings are
/// the loader's (`sr_module.c`): it compares them with strcmp.
fn expand_version(src: &Path, defines: &[String], out: &Path, file: &str) -> Version {
    let probe = out.join(format!("version_probe_{}", file.replace('/', "_")));
    // sr_module.h last, for MODULE_INTERFACE_VER (ver_defs.h was evaluated by then).
    let text = includes_of(src, file) + "#include \"core/sr_module.h\"\ntsilo_full SER_FULL_VERSION\ntsilo_flags SER_COMPILE_FLAGS\ntsilo_iface MODULE_INTERFACE_VER\n";
    fs::write(&probe, text).unwrap();
    let expanded = shim_build(src, defines).file(&probe).expand();
    let text = String::from_utf8_lossy(&expanded);
    let find = |tag: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| fail(&format!("could not expand {tag} from core/ver_defs.h")))
            .trim()
            .to_string()
    };
    Version {
        full: concat_literals(&find("tsilo_full ")),
        flags: concat_literals(&find("tsilo_flags ")),
        interface: find("tsilo_iface ").parse().unwrap_or_else(|_| fail("MODULE_INTERFACE_VER is not a number")),
    }
}

/// `"a" ", b"` -> `a, b` (adjacent C string literals; Kamailio's have no escapes).
fn concat_literals(s: &str) -> String {
    s.split('"').skip(1).step_by(2).collect()
}

/// The loader refuses a module whose strings differ by one byte: say so at build time.
fn check_against_installed(v: &Version) {
    let Ok(out) = Command::new("kamailio").arg("-V").output() else {
        println!("cargo:warning=kamailio not installed: cannot check the module's compile flags against it");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |tag: &str| text.lines().find_map(|l| l.strip_prefix(tag)).map(|s| s.trim().to_string());
    let (Some(full), Some(flags)) = (field("version: "), field("flags: ")) else {
        println!("cargo:warning=could not read `kamailio -V`; compile flags not checked");
        return;
    };
    if full != v.full || flags != v.flags {
        fail(&format!(
            "the Kamailio tree does not match the installed kamailio; the module would be refused.\n  \
             installed: {full}\n             {flags}\n  \
             tree:      {}\n             {}\n{}  \
             Fetch the matching tree with: make headers   (or fix KAMAILIO_SRC)",
            v.full,
            v.flags,
            flags_differ(&flags, &v.flags)
        ));
    }
}

/// The compile flags one side has and the other lacks, and what to do about them.
fn flags_differ(installed: &str, tree: &str) -> String {
    let set = |s: &str| s.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect::<Vec<_>>();
    let (a, b) = (set(installed), set(tree));
    let only_installed: Vec<&str> = a.iter().filter(|f| !b.contains(f)).map(String::as_str).collect();
    let only_tree: Vec<&str> = b.iter().filter(|f| !a.contains(f)).map(String::as_str).collect();
    if only_installed.is_empty() && only_tree.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "  flags only the installed kamailio has: {}\n  flags only the tree has: {}\n",
        if only_installed.is_empty() { "none".to_string() } else { only_installed.join(", ") },
        if only_tree.is_empty() { "none".to_string() } else { only_tree.join(", ") }
    );
    if only_installed.iter().chain(&only_tree).any(|f| f.starts_with("DBG_")) {
        text += "  DBG_* are memory debugging (MEMDBG): configure the tree as kamailio was built, \
                 e.g. `make cfg MEMDBG=1` (upstream's default) or `make cfg MEMDBG=0` (Debian's)\n";
    }
    text
}

fn generate_bindings(src: &Path, defines: &[String], out: &Path) {
    let clang_args: Vec<String> = defines
        .iter()
        .cloned()
        .chain([format!("-I{}", src.display()), "-Ic_shim".to_string()])
        .collect();
    let builder = bindgen::Builder::default()
        .header("c_shim/wrapper.h")
        .clang_args(&clang_args)
        .use_core()
        .layout_tests(false) // the C probe (c_layout.rs) checks the fields we read, with gcc
        .derive_default(true)
        .generate_comments(false)
        // netinet/in.h and Kamailio both define it; nothing here uses it.
        .blocklist_item("IPPORT_RESERVED")
        .allowlist_function("tsilo_shim_.*")
        .allowlist_function("parse_uri|parse_headers|parse_contact")
        .allowlist_function("fixup_(spve|igp)_null|fixup_free_(spve|igp)_null|get_str_fparam|get_int_fparam")
        .allowlist_function("sr_kemi_modules_add|destroy_modules_phase")
        .allowlist_function("find_export|fork_process|register_procs|cfg_register_child|cfg_child_init|route_lookup|ksr_msg_env_reset|sr_kemi_eng_get")
        .allowlist_var("main_rt|T_ASYNC_SUSPENDED|T_ASYNC_CONTINUE")
        .allowlist_type("usrloc_api_t|ucontact_t|ua_client|bind_usrloc_t")
        .allowlist_type("cell|sip_msg|tm_binds|registrar_api_t|module_exports|cmd_export_t|param_export_t")
        .allowlist_type("rpc_export_t|rpc_t|sr_kemi_t|counter_val_t|branch_t|_hdr_types_t|tmcb_params|contact_body_t|gparam_t")
        .allowlist_var("route_type|nr_branches|UL_CONTACT_INSERT|UL_CONTACT_UPDATE|PROC_MAIN|PROC_RPC")
        .allowlist_function("get_sip_branch|register_script_cb|register_timer|cfg_lookup_var")
        .allowlist_function("get_ruri_q|set_ruri_q|getbflagsval|setbflagsval")
        .allowlist_var("ruri_is_new")
        .allowlist_var("PRE_SCRIPT_CB|POST_SCRIPT_CB")
        .allowlist_type("script_cb_flag")
        .allowlist_var("TMCB_DESTROY|TMCB_REQUEST_IN|T_CANCELED|T_BR_UNDEFINED|REQUEST_ROUTE|FAILURE_ROUTE|PARAM_INT|PARAM_STRING|SR_KEMIP_.*")
        .allowlist_var("L_ALERT|L_BUG|L_CRIT2|L_CRIT|L_ERR|L_WARN|L_NOTICE|L_INFO|L_DBG|DEFAULT_DLFLAGS");
    let bindings = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || builder.generate())).unwrap_or_else(|_| {
        fail(
            "bindgen could not load libclang.\n  \
             Install it with: apt-get install -y --no-install-recommends libclang1-14 libclang-common-14-dev\n  \
             (or run: make deps)",
        )
    });
    let bindings = bindings.unwrap_or_else(|e| {
        fail(&format!(
            "bindgen failed on the Kamailio headers: {e}\n  \
             If a builtin header such as stddef.h is missing: apt-get install libclang-common-14-dev"
        ))
    });
    bindings.write_to_file(out.join("bindings.rs")).unwrap();
}

/// Compiles and runs `c_shim/layout.c` with the same defines: it prints the offsets and sizes the
/// C compiler computes for every field the module reads, for the layout unit test to compare.
fn write_c_layout(src: &Path, defines: &[String], out: &Path) {
    let build = shim_build(src, defines);
    let compiler = build.get_compiler();
    let exe = out.join("layout_probe");
    let status = compiler
        .to_command()
        .arg("c_shim/layout.c")
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run the C compiler: {e}")));
    if !status.success() {
        fail("c_shim/layout.c did not compile");
    }
    let output = Command::new(&exe).output().unwrap_or_else(|e| fail(&format!("layout probe: {e}")));
    fs::write(out.join("c_layout.rs"), output.stdout).unwrap();
}
