//! `saeforge devices`: what wgpu can see here, so a user can pick `--adapter` and knows
//! how large a dictionary fits in one storage binding.

use crate::gpu::list_adapters;

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DevicesArgs) -> crate::Result<()> {
    let list = list_adapters();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("plain data serialises")
        );
        return Ok(());
    }
    if list.is_empty() {
        println!("{}", crate::gpu::no_adapter_hint());
        return Ok(());
    }
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / 1048576.0);
    for (i, a) in list.iter().enumerate() {
        println!("[{i}] {} ({}, {})", a.name, a.backend, a.device_type);
        println!("    driver:                {} {}", a.driver, a.driver_info);
        println!("    max buffer size:       {}", mib(a.max_buffer_size));
        println!(
            "    max storage binding:   {}",
            mib(a.max_storage_buffer_binding_size)
        );
        println!(
            "    workgroup storage:     {} KiB",
            a.max_compute_workgroup_storage_size / 1024
        );
        println!(
            "    invocations/workgroup: {}",
            a.max_compute_invocations_per_workgroup
        );
        println!(
            "    workgroups/dimension:  {}",
            a.max_compute_workgroups_per_dimension
        );
        println!(
            "    storage buffers/stage: {}",
            a.max_storage_buffers_per_shader_stage
        );
    }
    Ok(())
}
