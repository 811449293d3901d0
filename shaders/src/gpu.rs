//! `gpu` owns the wgpu device and the one way reelforge's shaders run on it: [`Gpu`] picks an
//! adapter (any backend wgpu finds, lavapipe's CPU Vulkan included), compiles each WGSL entry
//! point once, and runs a [`Kernel`] over a [`Dispatch`]: storage buffers uploaded, one compute
//! pass, outputs read back as 32-bit words. Errors are typed ([`GpuError`]), never panics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use wgpu::util::DeviceExt;

/// Threads per workgroup of every one-dimensional shader (`@workgroup_size(256)`).
pub const WORKGROUP: u32 = 256;

/// The largest workgroup count along one dispatch dimension that every adapter accepts.
const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// What can go wrong setting up the device or running a shader.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// wgpu found no adapter on any backend it was built with.
    #[error(
        "no GPU adapter found ({0}); on a CPU-only Debian/Ubuntu machine install mesa-vulkan-drivers and \
         libvulkan1 (lavapipe, Vulkan on the CPU)"
    )]
    NoAdapter(#[source] wgpu::RequestAdapterError),
    /// The adapter refused to create a device.
    #[error("adapter {adapter} refused a device: {source}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// A shader failed to compile or a pipeline to build (a bug in the WGSL).
    #[error("shader {kernel}: {message}")]
    Shader {
        /// The kernel's name.
        kernel: &'static str,
        /// wgpu's validation message.
        message: String,
    },
    /// Running a kernel failed validation (bindings, sizes) or the device was lost.
    #[error("running {kernel}: {message}")]
    Dispatch {
        /// The kernel's name.
        kernel: &'static str,
        /// wgpu's message.
        message: String,
    },
    /// Waiting for the device, or mapping a result buffer, failed.
    #[error("reading back {kernel}: {message}")]
    Readback {
        /// The kernel's name.
        kernel: &'static str,
        /// What failed.
        message: String,
    },
    /// A buffer is larger than the device can bind.
    #[error("{kernel}: a buffer of {bytes} bytes is over the device's binding limit of {limit} bytes")]
    TooLarge {
        /// The kernel's name.
        kernel: &'static str,
        /// The buffer's size.
        bytes: u64,
        /// The device's `max_storage_buffer_binding_size` (or `max_buffer_size`, if smaller).
        limit: u64,
    },
    /// The arguments of a launcher do not fit together (lengths against dimensions).
    #[error("{op}: {message}")]
    Shape {
        /// The launcher.
        op: &'static str,
        /// What does not fit.
        message: String,
    },
}

/// One WGSL entry point: its source and a name for errors and the pipeline cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// Unique name (the cache key).
    pub name: &'static str,
    /// WGSL source.
    pub source: &'static str,
    /// The `@compute` function to run.
    pub entry: &'static str,
}

/// A read-only storage buffer's contents.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// `array<f32>`.
    F32(&'a [f32]),
    /// `array<u32>`.
    U32(&'a [u32]),
    /// `array<i32>`.
    I32(&'a [i32]),
}

impl Input<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Input::F32(v) => bytemuck::cast_slice(v),
            Input::U32(v) => bytemuck::cast_slice(v),
            Input::I32(v) => bytemuck::cast_slice(v),
        }
    }
}

/// One run of a kernel. Bindings, all in group 0: `0` the uniform `params` (32-bit words, f32
/// given by `to_bits`), then `inputs` from binding 1 in order, then `outputs` (read-write
/// storage, lengths in 32-bit words) after the last input.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    /// The uniform block at binding 0.
    pub params: &'a [u32],
    /// Read-only storage buffers, bindings 1, 2, …
    pub inputs: &'a [Input<'a>],
    /// Lengths, in 32-bit words, of the read-write storage buffers that follow the inputs.
    pub outputs: &'a [usize],
    /// Workgroup counts (x, y, z).
    pub workgroups: (u32, u32, u32),
}

/// Workgroup counts that cover `threads` invocations of a [`WORKGROUP`]-sized 1-D kernel,
/// folded into y past the per-dimension limit. Shaders recover the index as
/// `gid.y * nwg.x * 256 + gid.x` and skip indices at or past their length.
pub fn grid_1d(threads: usize) -> (u32, u32, u32) {
    groups_1d(threads.div_ceil(WORKGROUP as usize))
}

/// Workgroup counts for `groups` workgroups, folded into y past the per-dimension limit
/// (shaders recover the group as `wid.y * nwg.x + wid.x` and skip those past the end).
pub fn groups_1d(groups: usize) -> (u32, u32, u32) {
    let groups = groups.max(1);
    let x = groups.min(MAX_GROUPS_PER_DIM as usize);
    (x as u32, groups.div_ceil(x) as u32, 1)
}

/// Words of `v` for a uniform block.
pub fn f32_bits(v: f32) -> u32 {
    v.to_bits()
}

/// The f32 values of words read back.
pub fn to_f32(words: Vec<u32>) -> Vec<f32> {
    words.into_iter().map(f32::from_bits).collect()
}

/// The i32 values of words read back.
pub fn to_i32(words: Vec<u32>) -> Vec<i32> {
    words.into_iter().map(|w| w as i32).collect()
}

/// A wgpu device and queue with a cache of compiled pipelines. `Send + Sync`; one device
/// serves any number of threads (wgpu serialises submissions).
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
    poison: AtomicBool,
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.info.name).field("backend", &self.info.backend).finish()
    }
}

impl Gpu {
    /// The adapter wgpu prefers (high performance first; `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`
    /// and `WGPU_POWER_PREF` are honoured) with a device asking for the adapter's own limits.
    pub fn new() -> Result<Gpu, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        };
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(_) => pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(&instance, None)),
            Err(_) => pollster::block_on(instance.request_adapter(&options)),
        }
        .map_err(GpuError::NoAdapter)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("reelforge-shaders"),
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|source| GpuError::RequestDevice { adapter: info.name.clone(), source })?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            pipelines: Mutex::new(HashMap::new()),
            poison: AtomicBool::new(false),
            uncaptured,
        })
    }

    /// The adapter: name, backend, device type, driver.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// One line naming the adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn describe(&self) -> String {
        format!("{} ({:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }

    /// The device's limits (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// When on, every output buffer is filled with `0xFFFF_FFFF` (a NaN as f32, −1 as i32)
    /// before a kernel runs, so a shader that skips an element is caught; off by default (wgpu
    /// zero-fills new buffers). For tests.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// Number of distinct kernels compiled so far.
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn pipeline(&self, kernel: &Kernel) -> Result<wgpu::ComputePipeline, GpuError> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(kernel) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.name),
            source: wgpu::ShaderSource::Wgsl(kernel.source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.name),
            layout: None,
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Shader { kernel: kernel.name, message: e.to_string() });
        }
        cache.insert(*kernel, pipeline.clone());
        Ok(pipeline)
    }

    /// Runs `kernel` once over `d` and returns each output buffer's words.
    pub fn run(&self, kernel: &Kernel, d: &Dispatch<'_>) -> Result<Vec<Vec<u32>>, GpuError> {
        let pipeline = self.pipeline(kernel)?;
        let limit = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        let check = |bytes: u64| {
            if bytes > limit { Err(GpuError::TooLarge { kernel: kernel.name, bytes, limit }) } else { Ok(()) }
        };
        for i in d.inputs {
            check(i.bytes().len() as u64)?;
        }
        for &o in d.outputs {
            check(o as u64 * 4)?;
        }
        let (gx, gy, gz) = d.workgroups;
        let max = self.limits.max_compute_workgroups_per_dimension;
        if gx > max || gy > max || gz > max {
            return Err(GpuError::Dispatch {
                kernel: kernel.name,
                message: format!("{gx}×{gy}×{gz} workgroups, over the limit of {max} per dimension"),
            });
        }

        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let storage = wgpu::BufferUsages::STORAGE;
        // Uniform blocks are sized in 16-byte units; zero-length buffers cannot be bound.
        let mut params: Vec<u32> = d.params.to_vec();
        params.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let inputs: Vec<wgpu::Buffer> = d
            .inputs
            .iter()
            .map(|i| {
                let bytes = i.bytes();
                let contents: &[u8] = if bytes.is_empty() { &[0; 4] } else { bytes };
                self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("input"),
                    contents,
                    usage: storage,
                })
            })
            .collect();
        let poison = self.poison.load(Ordering::Relaxed);
        let outputs: Vec<wgpu::Buffer> = d
            .outputs
            .iter()
            .map(|&len| {
                let size = (len.max(1) * 4) as u64;
                if poison {
                    self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("output"),
                        contents: &vec![0xFF; size as usize],
                        usage: storage | wgpu::BufferUsages::COPY_SRC,
                    })
                } else {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("output"),
                        size,
                        usage: storage | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                }
            })
            .collect();
        let staging: Vec<wgpu::Buffer> = outputs
            .iter()
            .map(|o| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: o.size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        for (i, b) in inputs.iter().chain(&outputs).enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name),
            layout: &layout,
            entries: &entries,
        });
        let mut encoder =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(kernel.name) });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(kernel.name), timestamp_writes: None });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(gx, gy, gz);
        }
        for (o, s) in outputs.iter().zip(&staging) {
            encoder.copy_buffer_to_buffer(o, 0, s, 0, o.size());
        }
        self.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Dispatch { kernel: kernel.name, message: e.to_string() });
        }

        let (tx, rx) = mpsc::channel();
        for (i, s) in staging.iter().enumerate() {
            let tx = tx.clone();
            s.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        let readback = |message: String| GpuError::Readback { kernel: kernel.name, message };
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| readback(e.to_string()))?;
        for (_, r) in rx.iter() {
            r.map_err(|e| readback(e.to_string()))?;
        }
        if let Some(message) = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(GpuError::Dispatch { kernel: kernel.name, message });
        }
        let mut out = Vec::with_capacity(staging.len());
        for (s, &len) in staging.iter().zip(d.outputs) {
            let view = s.slice(..).get_mapped_range().map_err(|e| readback(e.to_string()))?;
            let words: &[u32] = bytemuck::cast_slice(&view);
            out.push(words[..len].to_vec());
            drop(view);
            s.unmap();
        }
        Ok(out)
    }
}
