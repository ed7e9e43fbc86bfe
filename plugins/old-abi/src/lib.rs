//! A component that exports `traptor:plugin/stage@0.0.9`: what a plugin built
//! against an older ABI looks like. The host must refuse it in `validate`,
//! naming the stage and the version. Test fixture only.

wit_bindgen::generate!({
    inline: "
        package traptor:plugin@0.0.9;

        interface stage {
            describe: func() -> string;
        }

        world plugin {
            export stage;
        }
    ",
    world: "plugin",
});

struct Old;

impl exports::traptor::plugin::stage::Guest for Old {
    fn describe() -> String {
        "old".to_owned()
    }
}

export!(Old);
